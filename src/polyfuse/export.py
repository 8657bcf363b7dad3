"""``python -m polyfuse.export RUN_DIR OUT_DIR``: the ``polyfuse-export`` command
(:mod:`polyfuse.inference.export`) without the console script."""

from polyfuse.inference.export import main

if __name__ == "__main__":
    main()
