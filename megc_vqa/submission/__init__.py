"""Leaderboard files: official names, writers, the validator, the submission zip and reports.

- ``files``: ``prediction_file_name(question_path)``, ``STR_PREDICTION_NAME``, ``read_jsonl``,
  ``write_jsonl``, ``atomic_write_text`` / ``atomic_write_bytes``, ``Problem``.
- ``writer``: ``fill_answers``, ``write_predictions``, ``write_str_csv``, ``make_submission_zip``.
- ``validate``: ``validate_files(files_or_zips, question_paths)``.
- ``report``: ``write_vqa_report(out_dir, rows, scores)``.
"""
