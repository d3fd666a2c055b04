"""Code written for crate_edu 0.1 gets one line naming the new home of what it used."""

from __future__ import annotations

import importlib

import pytest

import crate_edu
from crate_edu.renamed import MOVED_MODULES


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_a_moved_module_names_its_new_home(old: str):
    with pytest.raises(ModuleNotFoundError) as info:
        importlib.import_module(old)
    assert str(info.value).startswith(f"{old} was moved in crate_edu 0.2: import from crate_edu.")
    assert "\n" not in str(info.value)


def test_the_finder_leaves_other_missing_modules_alone():
    with pytest.raises(ModuleNotFoundError, match="No module named 'crate_edu.nothing_here'"):
        import crate_edu.nothing_here  # noqa: F401


def test_set_literal_names_set_reference():
    with pytest.raises(ImportError, match=r"set_literal is now crate_edu\.models\.set_reference"):
        from crate_edu.models import set_literal  # noqa: F401
    assert not hasattr(crate_edu.models, "no_such_name")


def test_the_literal_argument_names_reference():
    with pytest.raises(TypeError, match=r"^literal= was renamed reference= in crate_edu 0\.2"):
        crate_edu.create_model("crate_nano_cifar", literal=True)
