"""The examples in the docstrings run and print what they say."""
import doctest
import importlib

import pytest

MODULES = ["fastcollate.packing", "fastcollate.padding", "fastcollate.collate",
           "fastcollate.kernels", "fastcollate.sampler", "fastcollate._core",
           "fastcollate._sampler", "fastcollate.stream", "fastcollate._stream"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0, f"{name} has no examples"
