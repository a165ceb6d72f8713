"""Spot then recognise: the 3D-CNN spotter, long-video inference, ME-STR and ME-LVQA pipelines.

Modules (import them directly; this package imports nothing heavy):

``spotter_config``  ``SpotterConfig`` (crop size, T frames, window seconds -> ``stride_for(fps)``, input
              channels grey/diff/dev, optional emotion head, ``architecture``) and ``SpotterModel``, the
              protocol every spotting network meets (what training, inference, selection and the checkpoint use).
``model``     ``Spotter`` (the 3D CNN, (B, C, T, H, W) -> (B, 2 + E, T) logits) and the registry ``SPOTTERS``
              (name -> class: a second network is one module and one line there); ``build_spotter``,
              ``save_checkpoint`` / ``load_checkpoint`` (the checkpoint records the network by name).
The STR naming rule (folder = video, SAMM-LV style; ground truth in other namings matched), where fps
comes from (``FpsPolicy``: option, ``videos.json`` sidecar, dataset; never guessed), ``discover_videos``
and ``write_str_ground_truth`` live with the loaders whose naming they are: ``megc_vqa.annotations.long_videos``.

``data``      ``VideoFrames.open(source)`` (over ``visual.frames.FrameReader``), ``iter_crop_chunks`` (only
              the sampling grid is decoded, in chunks), ``Stabiliser`` (lighting, head motion),
              ``ChannelMaker``, ``soft_labels``, ``prepare_video``, ``WindowDataset``; ``NoFramesError``.
``infer``     ``score_video(model, source, fps, chunk=, batch=) -> ScoreCurve`` (memory flat in video length),
              ``extract_intervals(curve, PeakParams) -> [SpottedInterval]`` (micro <= 0.5 s, macro longer),
              ``motion_score_video`` (the model-free MEGC-style baseline, ``BASELINE_NAME``).
``recipe``    ``TrainConfig``, ``load_recipe``, ``load_videos`` (the long videos a recipe names; ground truth by
              ``metrics.strs.read_events``, the one STR reader). Recipes: ``recipes/spotting/*.yaml``.
``selection`` strict spotting scores by ``metrics.strs``, ``choose_peaks``, ``split_videos`` (whole subjects).
``fitting``   ``fit`` (epoch + thresholds chosen on an inner validation split of whole subjects).
``train``     ``loso`` and the ``megc-vqa spot-train`` command.
``pipeline``  ``STRRunner(out, spotter, peaks, STRConfig, ask).run(jobs)`` -> ``str_pred.csv`` (resumable),
              ``discover_videos``, ``VQAAsk`` = ``ask(source, [onset, apex, offset], question, fps) -> str``,
              ``engine_ask(model, adapter)``.
``lvqa``      ``answer_question(question, events, event_aus)`` and ``answer_file`` for ME-LVQA.
``plot``      ``plot_video(curve, predicted, ground_truth, path)``.
``report``    ``write_str_scores`` (``scores.json`` + the F1/P/R-vs-threshold curve), ``write_lvqa_report``
              (LVQA scores and the per-video table).

Scripts: ``eval/run_str.py``, ``eval/run_lvqa.py``, ``benchmarks/spot.py``.
"""
