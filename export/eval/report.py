"""``report.md``: the evaluation as Markdown tables to paste into ``docs/default-model.md``.

One summary table (a row per signal: real reference, white noise, each bundle and real audio
through its codec), a per-label table, a drift table with one adherence/FD column pair per
bundle, and the issue's targets checked per bundle. Numbers come from ``report.json`` only, so
the table can be rebuilt from it.
"""

from __future__ import annotations

from lmdm_export.eval.trend import segment_trend

TARGETS = ("adherence >= 90%", "tonal energy >= 0.85", "FD <= 1.5x real-vs-real",
           "real-time factor >= 20")


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _num(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def _summary(report: dict) -> list[str]:
    ref = report["reference"]
    rr = ref["real_vs_real_fd"]
    rows = [["real B (other held-out pieces) vs real A",
             _pct(ref["classifier_accuracy_on_real_overall"]), _num(rr), "1.00",
             _num(ref["tonal_energy_real"]), _num(ref["rms_real"], 3),
             _num(ref.get("motion_real")), "—"],
            ["white noise vs real A", "—", _num(ref["noise_vs_real_fd"]),
             _num(ref["noise_vs_real_fd"] / rr if rr else None), _num(ref["tonal_energy_noise"]),
             _num(ref["rms_real"], 3), _num(ref.get("motion_noise")), "—"]]
    for name, b in report["bundles"].items():
        speed = b["speed"]
        rtf = (f"{speed['realtime_factor']:.1f} "
               f"(steady {speed['realtime_factor_steady']:.1f})")
        rows.append([f"**{name}**", _pct(b["adherence"]), _num(b["fd"]), _num(b["fd_ratio"]),
                     _num(b["tonal_energy"]), _num(b["rms"], 3), _num(b.get("motion")), rtf])
        codec = b.get("codec")
        if codec is not None:
            rows.append([f"real B through {name}'s codec", _pct(codec["adherence"]),
                         _num(codec["fd"]), _num(codec["fd_ratio"]),
                         _num(codec["tonal_energy"]), _num(codec["rms"], 3),
                         _num(codec.get("motion")), "—"])
    return _table(["signal", "prompt adherence", f"FD vs real A (N={ref['clips']})",
                   "FD / real-vs-real", "tonal energy (median)", "RMS (median)",
                   "spectral motion (median)", "real-time factor"], rows)


def _per_label(report: dict) -> list[str]:
    ref, bundles = report["reference"], report["bundles"]
    header = ["label", "ref. split", "classifier on real B"]
    for name, b in bundles.items():
        header += [f"{name} adherence", f"{name} FD", f"{name} tonal"]
        if "codec" in b:
            header.append(f"{name} codec FD")
    header += ["real-vs-real FD", "real tonal"]
    rows = []
    for lab in report["labels"]:
        row = [lab, ref["split_per_label"][lab], _pct(ref["classifier_accuracy_on_real"][lab])]
        for b in bundles.values():
            row += [_pct(b["adherence_per_label"][lab]), _num(b["fd_per_label"][lab], 1),
                    _num(b["tonal_energy_per_label"].get(lab))]
            if "codec" in b:
                row.append(_num(b["codec"]["fd_per_label"][lab], 1))
        row += [_num(ref["real_vs_real_fd_per_label"][lab], 1),
                _num(ref["tonal_energy_real_per_label"].get(lab))]
        rows.append(row)
    return _table(header, rows)


def _drift(report: dict) -> list[str]:
    drifts = {name: b["drift"] for name, b in report["bundles"].items() if "drift" in b}
    if not drifts:
        return []
    first = next(iter(drifts.values()))
    header = ["segment"]
    for name in drifts:
        header += [f"{name} adherence", f"{name} FD", f"{name} tonal"]
    rows = []
    for k, seg in enumerate(first["segments"]):
        row = [f"{seg['start']:.0f}–{seg['end']:.0f} s"]
        for d in drifts.values():
            s = d["segments"][k] if k < len(d["segments"]) else None
            row += [_pct(s and s["adherence"]), _num(s and s["fd"]),
                    _num(s and s["tonal_energy"])]
        rows.append(row)
    for key, title in (("first_minute", "first minute"), ("last_minute", "last minute")):
        row = [f"**{title}**"]
        for d in drifts.values():
            row += [_pct(d[key]["adherence"]), _num(d[key]["fd"]),
                    _num(d[key]["tonal_energy"])]
        rows.append(row)
    streams = first.get("streams_per_label", 1)
    prompts = "; ".join(f"{k}: " + ", ".join(f"'{p}'" for p in ([v] if isinstance(v, str) else v))
                        for k, v in first["prompts"].items())
    minutes = f"{first['stream_seconds'] / 60:g}-minute"
    how = (f"one {minutes} stream per prompt" if streams == 1 else
           f"{streams} {minutes} streams per label, each from its own seed and the label's "
           "prompts in turn")
    lines = [f"Drift: {how} ({prompts}), FD pooled over the {len(first['labels']) * streams} "
             f"streams against real A on equal "
             f"counts. Real-vs-real on the same counts: {_num(first['real_vs_real_fd_segment'])}"
             f" per segment, {_num(first['real_vs_real_fd_minute'])} per minute.", ""]
    return lines + _table(header, rows)


def _targets(report: dict) -> list[str]:
    rows = []
    names = list(report["bundles"])
    for name, b in report["bundles"].items():
        checks = [b["adherence"] >= 0.9,
                  b["tonal_energy"] is not None and b["tonal_energy"] >= 0.85,
                  b["fd_ratio"] is not None and b["fd_ratio"] <= 1.5,
                  b["speed"]["realtime_factor"] >= 20]
        rows.append([name, *("yes" if c else "no" for c in checks)])
    lines = _table(["bundle", *TARGETS], rows)
    drifts = {n: b["drift"] for n, b in report["bundles"].items() if "drift" in b}
    if len(drifts) >= 2:
        growth = {n: _growth(d) for n, d in drifts.items()}
        lines += ["", "FD growth, last minute minus first minute (less drift is smaller): "
                  + ", ".join(f"{n} {_num(g)}" for n, g in growth.items())
                  + f" (in the order given: {', '.join(names)})."]
        trends = {n: d.get("fd_trend") for n, d in drifts.items()}
        if all(trends.values()):
            lines += ["", "FD trend over all segments, per minute, ± its standard error (a "
                      "lower bound: adjacent segments are not independent)"
                      + _redrawn(trends.values()) + ": "
                      + ", ".join(f"{n} {_trend(t)}" for n, t in trends.items()) + "."]
        first, *others = drifts
        paired = {n: drifts[n].get("paired_trend")
                  or segment_trend(drifts[n]["segments"], minus=drifts[first]["segments"])
                  for n in others}
        if all(paired.values()):
            lines += ["", f"Paired against {first}: every bundle's stream is rendered from the "
                      "same seed, so the segments' FDs move together and their difference is "
                      "less noisy than either; its trend per minute, ± its standard error"
                      + _redrawn(paired.values()) + ": "
                      + ", ".join(f"{n} - {first} {_trend(t)}" for n, t in paired.items())
                      + " (positive: drifts more than " + first + ")."]
    return lines


def _redrawn(trends) -> str:
    """The note on the second error, where the trends have one (reports since session 27)."""
    if not any(t.get("stream_bootstrap_error") is not None for t in trends):
        return ""
    return (" and, in brackets, its standard error over redrawn streams (a bootstrap over each "
            "label's streams, which also counts how far one stream's wandering moves all its "
            "segments)")


def _trend(trend: dict) -> str:
    slope, error = trend["slope_per_minute"], trend["standard_error"]
    text = f"{slope:+.2f}" + ("" if error is None else f" ± {error:.2f}")
    redrawn = trend.get("stream_bootstrap_error")
    return text + ("" if redrawn is None else f" (± {redrawn:.2f})")


def _growth(drift: dict) -> float | None:
    a, b = drift["first_minute"]["fd"], drift["last_minute"]["fd"]
    return None if a is None or b is None else b - a


def markdown_report(report: dict) -> str:
    """The Markdown text of ``report.md``."""
    held = (report["classifier"].get("heldout") or {})
    machine = report["machine"]
    intro = (f"Classifier: {len(report['classifier']['labels'])} labels, held-out accuracy "
             f"{_pct(held.get('accuracy'))} (balanced {_pct(held.get('balanced_accuracy'))}) on "
             f"validation pieces. Clips of {report['clip_seconds']:g} s at "
             f"{report['sample_rate']} Hz mono; {report['reference']['clips']} clips per set "
             f"over {len(report['labels'])} labels. Machine: {machine['cpus']} CPUs, load "
             f"average {machine['load_average_at_start'][0]:.1f} at the start.")
    parts = [intro, "", *_summary(report), "", *_per_label(report), ""]
    drift = _drift(report)
    if drift:
        parts += [*drift, ""]
    parts += ["Targets:", "", *_targets(report), ""]
    return "\n".join(parts)
