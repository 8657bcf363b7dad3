"""polyfuse.lazy: package names loaded on first use (polyfuse.training, polyfuse.reporting)."""

from __future__ import annotations

import pytest
from hydra.utils import get_class


def test_lazy_package_names_resolve():
    """The lazily loaded names of ``polyfuse.training`` and ``polyfuse.reporting`` are the classes and
    functions of their submodules, listed by ``dir`` and found by Hydra's ``_target_`` lookup; an unknown
    name is an AttributeError."""
    import polyfuse.reporting as reporting
    import polyfuse.training as training
    from polyfuse.reporting.report import build_report
    from polyfuse.training.module import PolyfuseLitModule

    assert training.PolyfuseLitModule is PolyfuseLitModule and reporting.build_report is build_report
    for package in (training, reporting):
        assert set(package.__all__) <= set(dir(package))
        assert all(getattr(package, name) is not None for name in package.__all__)
        with pytest.raises(AttributeError, match="no attribute 'nothing'"):
            package.nothing
    assert get_class("polyfuse.training.MultimodalDataModule").__module__ == "polyfuse.training.multimodal_datamodule"
