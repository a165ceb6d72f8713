from megc_vqa.cli import main

if __name__ == "__main__":  # guarded: worker processes of a spawn/forkserver pool re-import __main__
    raise SystemExit(main())
