"""Package layout for setuptools (the metadata is in pyproject.toml).

The code lives under ``src/``. Two directories stay at the repository's top level, where users and
the docs expect them, and are mapped into the package at build time (docs/install.md):

- ``configs/`` -> ``polyfuse.configs`` (Hydra finds it as ``pkg://polyfuse.configs``),
- ``data/avdigits/`` -> ``polyfuse.avdigits_data`` (the embedded AV-digits dataset, 17 MB).

Every sub-directory of a mapped directory is listed as a package of its own, as setuptools wants
for data files (pyproject.toml alone cannot combine package discovery with mapped directories).
"""

from setuptools import find_namespace_packages, find_packages, setup

#: package -> (directory at the repository's top level, data files of each of its packages)
MAPPED = {
    "polyfuse.configs": ("configs", ["*.yaml"]),
    "polyfuse.avdigits_data": ("data/avdigits", ["*.json", "*.jsonl", "*.flac", "*.png", "*.mp4"]),
}


def mapped_packages(package: str, directory: str) -> list[str]:
    """``package`` and one sub-package per sub-directory of ``directory``."""
    subdirectories = find_namespace_packages(directory, exclude=["*__pycache__*"])
    return [package, *(f"{package}.{sub}" for sub in subdirectories)]


packages = {package: mapped_packages(package, directory) for package, (directory, _) in MAPPED.items()}
setup(
    packages=[*find_packages("src"), *(name for names in packages.values() for name in names)],
    package_dir={"": "src", **{package: directory for package, (directory, _) in MAPPED.items()}},
    package_data={"polyfuse": ["py.typed"],
                  **{name: MAPPED[package][1] for package, names in packages.items() for name in names}},
)
