import subprocess
import sys
import time

from megc_vqa.cli import COMMANDS, build_parser


def test_help_is_fast_and_imports_no_torch():
    code = (
        "import sys, time; t=time.perf_counter();"
        "from megc_vqa.cli import build_parser; build_parser().format_help();"
        "print(time.perf_counter()-t);"
        "print(sorted(m for m in ('torch','transformers','cv2','pandas') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert float(out[0]) < 1.0
    assert out[1] == "[]"


def test_every_command_is_registered():
    parser = build_parser()
    help_text = parser.format_help()
    for name in COMMANDS:
        assert name in help_text


def test_cli_wall_time():
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "megc_vqa", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - t < 2.0  # interpreter start-up included
