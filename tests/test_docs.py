"""The examples in the docstrings run and print what they say."""
import doctest
import importlib
import importlib.util

import pytest

MODULES = ["fastcollate.packing", "fastcollate.padding", "fastcollate.collate",
           "fastcollate.rnn", "fastcollate._cast", "fastcollate.kernels", "fastcollate.sampler", "fastcollate._core",
           "fastcollate._sampler", "fastcollate.store",
           "fastcollate.flat", "fastcollate._flat",
           "fastcollate.stream", "fastcollate._stream"]
if importlib.util.find_spec("pyarrow") is not None:    # the optional [arrow] extra
    MODULES.append("fastcollate.formats")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0, f"{name} has no examples"
