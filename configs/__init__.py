"""polyfuse's Hydra configs: ``configs/`` in a checkout, the package ``polyfuse.configs`` in a wheel.

This file makes the directory a Python package, so that Hydra can find it as
``pkg://polyfuse.configs`` (docs/install.md); it holds no code.
"""
