"""Synthetic micro-expression data written in the real datasets' layouts, for tests and the demo.

Modules:
    face       procedural face: ``sample_identity(rng)``, ``render_frames(identity, activations, sides, rng,
               size=128, grey=False, *, head=None, noise=2.0)``, ``au_course(n, onset, apex, offset)``,
               ``AU_REGIONS``/``region_box`` (where each AU moves the face)
    painter    FacePainter: draws one frame, AU by AU, with sub-pixel OpenCV primitives
    motion     time courses: ``au_course``, ``head_motion``, ``blink_course``
    emotions   AU recipes per emotion: ``sample_expression(emotion, rng, single=None)`` -> ``Expression``
    datasets   ``write_datasets(out, seed, subjects, clips_per_subject, datasets, size, workers, realism,
               long_events)`` (``megc-vqa synth``)
    test_set   ``write_test_set(questions, out, seed)`` and ``write_long_videos(out, n, seed, fps)``
               (``megc-vqa synth-test``)
    jobs       render-and-write jobs with their own seeds, run in a pool of two (byte-identical per seed)
    layout     subject/clip/video naming; paths and spreadsheets through :mod:`megc_vqa.annotations`
    realism    the presets (``synthetic``, ``release``): each release's frame, face size and place, amplitudes,
               durations, blinks, flicker, noise, JPEG (with sources); ``sample_look``
    scene      the release preset's renderer: static scene once per clip, textured face moved by AU fields
    calibration  measures on written frames (Haar/HOG faces, Farneback motion, noise, blinks) for
               ``benchmarks/calibrate_realism.py`` and the tests
"""
