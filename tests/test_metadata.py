"""What an installed cloudpickle-rs says about itself (importlib.metadata), and
its one version source: Cargo.toml."""

import importlib.metadata
import os
import re

import cloudpickle_rs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
URL = "https://github.com/cloudpickle-rs/cloudpickle-rs"


def cargo_version():
    with open(os.path.join(ROOT, "Cargo.toml"), encoding="utf-8") as f:
        text = f.read()
    package = re.search(r"^\[package\]\n(.*?)(?=^\[)", text, re.MULTILINE | re.DOTALL).group(1)
    return re.search(r'^version = "([^"]+)"$', package, re.MULTILINE).group(1)


def metadata():
    return importlib.metadata.distribution("cloudpickle-rs").metadata


def test_version_is_cargo_tomls_everywhere():
    version = cargo_version()
    assert cloudpickle_rs.__version__ == version
    assert importlib.metadata.version("cloudpickle-rs") == version
    assert metadata()["Version"] == version


def test_license_is_an_spdx_expression_with_its_file():
    md = metadata()
    assert md["License-Expression"] == "BSD-3-Clause"
    assert md.get_all("License-File") == ["LICENSE"]
    # PEP 639: no legacy License field or license classifier beside the expression
    # (.get: with importlib_metadata installed, a missing key raises KeyError).
    assert md.get("License") is None
    assert not [c for c in md.get_all("Classifier") if c.startswith("License ::")]
    files = importlib.metadata.distribution("cloudpickle-rs").files
    shipped = [f for f in files if f.name == "LICENSE"]
    assert shipped, "the LICENSE file is not installed with the metadata"
    text = shipped[0].read_text()
    assert "Redistribution and use in source and binary forms" in text
    assert "Neither the name of the copyright holder" in text  # the third clause


def test_project_urls():
    urls = dict(entry.split(", ", 1) for entry in metadata().get_all("Project-URL"))
    assert urls == {
        "Homepage": URL,
        "Source": URL,
        "Issues": f"{URL}/issues",
        "Changelog": f"{URL}/blob/main/CHANGELOG.md",
        "Documentation": f"{URL}#readme",
    }


def test_classifiers_and_keywords():
    classifiers = metadata().get_all("Classifier")
    for minor in range(9, 16):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert "Topic :: System :: Distributed Computing" in classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    assert any(c.startswith("Operating System :: ") for c in classifiers)
    assert "Programming Language :: Python :: Implementation :: CPython" in classifiers
    assert "cloudpickle" in metadata()["Keywords"].split(",")
    assert metadata()["Requires-Python"] == ">=3.9"
    # No runtime dependency beyond the standard library.
    assert not [r for r in metadata().get_all("Requires-Dist") or [] if "extra ==" not in r]
