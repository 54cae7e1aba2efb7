"""Offline evaluation of generated audio: ``lmdm-bridge eval {classifier,run}``.

No pretrained audio embedder can be downloaded here, so the yardstick is a small label
classifier trained on real renders of the corpus (:mod:`.train_classifier`). From it come prompt
adherence (its accuracy on generated audio for the prompted label) and a Fréchet distance in its
penultimate embedding (:mod:`.frechet`); beside them tonal energy (:mod:`.tonal`), drift over a
long stream and the bundle's real-time factor (:mod:`.run`).
"""
