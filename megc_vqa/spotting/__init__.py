"""Spot then recognise: the 3D-CNN spotter, long-video inference, ME-STR and ME-LVQA pipelines.

Modules (import them directly; this package imports nothing heavy):

``model``     ``SpotterConfig`` (crop size, T frames, window seconds -> ``stride_for(fps)``, input channels
              grey/diff/dev, optional emotion head) and ``Spotter`` ((B, C, T, H, W) -> (B, 2 + E, T) logits);
              ``save_checkpoint`` / ``load_checkpoint``.
``data``      ``VideoFrames.open(source)``, ``iter_crop_chunks`` (only the sampling grid is decoded, in chunks),
              ``ChannelMaker``, ``soft_labels``, ``prepare_video``, ``WindowDataset``; ``NoFramesError``.
``infer``     ``score_video(model, source, fps, chunk=, batch=) -> ScoreCurve`` (memory flat in video length),
              ``extract_intervals(curve, PeakParams) -> [SpottedInterval]`` (micro <= 0.5 s, macro longer),
              ``motion_score_video`` (model-free baseline).
``train``     ``fit`` (epoch + thresholds chosen on an inner validation split), ``loso``, ``load_recipe``;
              the ``megc-vqa spot-train`` command. Recipes: ``recipes/spotting/*.yaml``.
``pipeline``  ``STRRunner(out, spotter, peaks, STRConfig, ask).run(jobs)`` -> ``str_pred.csv`` (resumable),
              ``discover_videos``, ``VQAAsk`` = ``ask(source, [onset, apex, offset], question, fps) -> str``,
              ``engine_ask(model, adapter)``.
``lvqa``      ``answer_question(question, events, event_aus)`` and ``answer_file`` for ME-LVQA.
``plot``      ``plot_video(curve, predicted, ground_truth, path)``.

Scripts: ``eval/run_str.py``, ``eval/run_lvqa.py``, ``benchmarks/spot.py``.
"""
