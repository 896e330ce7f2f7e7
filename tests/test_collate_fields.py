"""PackedCollate's field rules: which fields are ragged (fixed-shape tensors are
stacked), per-field padding values, named lengths/mask keys, misspelled keys; and
to_device on every container kind."""
import collections
import dataclasses
import warnings

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pad_sequence, unpack_sequence
from torch.utils.data import default_collate

from fastcollate import PackedCollate, pack, packed_collate, to_device


def sample(n, label=0):
    return {"input_ids": list(range(1, n + 1)), "labels": [label] * n,
            "attention_mask": [1] * n}


HF = [sample(3, 7), sample(1, 8), sample(4, 9)]


# -- which fields are ragged --------------------------------------------------------

def test_fixed_shape_tensor_fields_are_stacked_like_default_collate():
    batch = [{"image": torch.full((3, 4, 4), float(i)), "box": torch.tensor([i, -i]),
              "tokens": torch.arange(i + 1)} for i in range(3)]
    out = packed_collate(batch)
    ref = default_collate([{k: b[k] for k in ("image", "box")} for b in batch])
    assert torch.equal(out["image"], ref["image"]) and torch.equal(out["box"], ref["box"])
    assert isinstance(out["tokens"], PackedSequence)
    assert [t.tolist() for t in unpack_sequence(out["tokens"])] == [[0], [0, 1], [0, 1, 2]]


def test_fixed_shape_arrays_in_tuple_samples_are_stacked():
    batch = [(np.arange(i + 2), np.full(2, i, dtype=np.float32)) for i in range(3)]
    seqs, vec = packed_collate(batch)
    assert isinstance(seqs, PackedSequence)
    assert vec.dtype == torch.float32 and vec.tolist() == [[0, 0], [1, 1], [2, 2]]


def test_a_tensor_field_of_one_length_is_stacked_and_the_flip_warns():
    collate = PackedCollate()
    equal = collate([(torch.arange(2), 0), (torch.arange(2), 1)])
    assert torch.equal(equal[0], torch.stack([torch.arange(2)] * 2))
    with pytest.warns(UserWarning, match=r"field 0 was stacked .* lengths differ"):
        ragged = collate([(torch.arange(2), 0), (torch.arange(1), 1)])
    assert isinstance(ragged[0], PackedSequence)


def test_a_field_once_ragged_stays_ragged_in_batches_of_one_length():
    """A batch of one (the last of an epoch) or of bucketed ties keeps the type the
    field had: an RNN fed a stacked (B, L) tensor instead would run silently wrong."""
    collate = PackedCollate()
    assert isinstance(collate([(torch.arange(3), 0), (torch.arange(1), 1)])[0],
                      PackedSequence)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for batch in ([(torch.arange(2), 0), (torch.arange(2), 1)], [(torch.arange(4), 0)]):
            out = collate(batch)
            assert isinstance(out[0], PackedSequence)
            got = torch.nn.utils.rnn.unpack_sequence(out[0])
            assert [t.tolist() for t in got] == [x.tolist() for x, _ in batch]


def test_declared_tensor_fields_are_ragged_even_with_one_length():
    for collate in (PackedCollate(ragged=0), PackedCollate(dtype={0: torch.int32}),
                    PackedCollate(groups=[(0,)])):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = collate([(torch.arange(2), 0), (torch.arange(2), 1)])
        assert isinstance(out[0], PackedSequence), collate


def test_list_fields_are_always_ragged():
    out = packed_collate([{"ids": [1, 2]}, {"ids": [3, 4]}])
    assert isinstance(out["ids"], PackedSequence)


def test_bare_tensor_samples_are_always_ragged():
    out = packed_collate([torch.arange(2), torch.arange(2)])
    assert isinstance(out, PackedSequence)


def test_nested_dict_samples_collate_like_default_collate():
    batch = [{"meta": {"a": torch.full((2,), float(i)), "b": i, "c": [i, 2 * i]},
              "x": [1] * (i + 1)} for i in range(3)]
    out = packed_collate(batch)
    ref = default_collate([b["meta"] for b in batch])
    assert torch.equal(out["meta"]["a"], ref["a"]) and torch.equal(out["meta"]["b"], ref["b"])
    assert all(torch.equal(u, v) for u, v in zip(out["meta"]["c"], ref["c"]))
    with pytest.raises(ValueError, match=r"field 'meta'\['a'\]: sample 1 has shape \(3,\)"):
        packed_collate([{"meta": {"a": torch.ones(2)}}, {"meta": {"a": torch.ones(3)}}])


# -- per-field padding values and names ---------------------------------------------

def test_per_field_padding_values():
    collate = PackedCollate(mode="pad", padding_value={"input_ids": 5, "labels": -100,
                                                       "attention_mask": 0})
    out = collate(HF)
    for key, value in (("input_ids", 5), ("labels", -100), ("attention_mask", 0)):
        ref = pad_sequence([torch.tensor(s[key]) for s in HF], batch_first=True,
                           padding_value=value)
        assert torch.equal(out[key], ref), key


def test_fields_missing_from_the_padding_dict_pad_with_zero():
    out = PackedCollate(mode="pad", padding_value={"labels": -100})(HF)
    assert out["input_ids"][1].tolist() == [1, 0, 0, 0]
    assert out["labels"][1].tolist() == [8, -100, -100, -100]


def test_mask_and_lengths_under_the_names_given():
    collate = PackedCollate(mode="pad", padding_value={"input_ids": 5},
                            mask={"input_ids": "attention_mask2"},
                            lengths={"input_ids": "length"})
    out = collate(HF)
    assert out["length"].tolist() == [3, 1, 4]
    assert out["attention_mask2"].tolist() == (out["input_ids"] != 5).tolist()
    assert "input_ids_mask" not in out and "labels_lengths" not in out


@pytest.mark.parametrize("option", ["dtype", "padding_value", "mask", "lengths"])
def test_a_misspelled_key_in_a_per_field_option_raises(option):
    value = {"dtype": torch.int32, "padding_value": 0, "mask": "m", "lengths": "n"}[option]
    collate = PackedCollate(mode="pad", **{option: {"input_idz": value}})
    with pytest.raises(KeyError, match=rf"{option} names fields \['input_idz'\]"):
        collate(HF)


def test_a_misspelled_ragged_key_raises():
    with pytest.raises(KeyError, match=r"ragged fields \['input_idz'\]"):
        PackedCollate(ragged="input_idz")(HF)


def test_a_per_field_option_naming_a_non_ragged_field_raises():
    batch = [{"ids": [1, 2], "label": 0}, {"ids": [3], "label": 1}]
    with pytest.raises(ValueError, match=r"padding_value names field 'label', which is not"):
        PackedCollate(mode="pad", padding_value={"label": -1})(batch)
    with pytest.raises(ValueError, match=r"ragged=\['ids'\] does not list it"):
        PackedCollate(ragged="ids", mode="pad", padding_value={"label": -1})(batch)


def test_a_named_output_key_that_is_already_a_field_raises():
    with pytest.raises(ValueError, match=r"adds the key 'attention_mask'.*already have"):
        PackedCollate(mode="pad", mask={"input_ids": "attention_mask"})(HF)


def test_names_need_dict_samples_and_bad_names_are_refused_at_construction():
    with pytest.raises(TypeError, match=r"needs dict samples"):
        PackedCollate(mode="pad", lengths={0: "n"})([([1, 2], 0), ([3], 1)])
    with pytest.raises(TypeError, match=r"samples are bare sequences"):
        PackedCollate(mode="pad", padding_value={0: 1})([[1, 2], [3]])
    with pytest.raises(TypeError, match=r"lengths\['x'\] must be a str"):
        PackedCollate(lengths={"x": 1})
    with pytest.raises(ValueError, match=r"would add the key 'n' for both field 'x'"):
        PackedCollate(lengths={"x": "n", "y": "n"})([{"x": [1], "y": [2]}] * 2)
    with pytest.raises(TypeError, match=r"padding_value\['x'\] must be a number"):
        PackedCollate(mode="pad", padding_value={"x": "0"})


# -- to_device ------------------------------------------------------------------------

@dataclasses.dataclass
class Derived:
    x: torch.Tensor
    total: torch.Tensor = dataclasses.field(init=False)
    note: str = dataclasses.field(init=False)       # never set
    calls: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.calls.append("post_init")
        self.total = self.x.sum()


@dataclasses.dataclass(frozen=True)
class Frozen:
    x: torch.Tensor


def test_to_device_keeps_a_defaultdict_and_its_factory():
    batch = collections.defaultdict(list, {"x": pack([[1, 2], [3]]), "y": torch.ones(2)})
    moved = to_device(batch, "cpu")
    assert type(moved) is collections.defaultdict and moved.default_factory is list
    assert moved["x"].batch_sizes.tolist() == [2, 1] and moved["missing"] == []


def test_to_device_on_dataclasses_with_init_false_fields():
    d = Derived(torch.ones(3))
    moved = to_device({"d": d, "f": Frozen(torch.ones(1))}, "cpu")
    assert isinstance(moved["d"], Derived) and moved["d"].total.item() == 3
    assert not hasattr(moved["d"], "note") and moved["d"].calls == ["post_init"]
    assert isinstance(moved["f"], Frozen)


def test_to_device_moves_every_tensor_and_leaves_batch_sizes_on_the_cpu():
    p = pack([[1, 2], [3]])
    batch = {"p": p, "t": (torch.ones(1), [torch.zeros(2)]),
             "od": collections.OrderedDict(a=torch.ones(1)), "s": "keep", "n": None}
    moved = to_device(batch, "meta")
    assert moved["p"].data.is_meta and moved["p"].sorted_indices.is_meta
    assert moved["p"].batch_sizes is p.batch_sizes
    assert moved["t"][0].is_meta and moved["t"][1][0].is_meta
    assert isinstance(moved["od"], collections.OrderedDict) and moved["od"]["a"].is_meta
    assert moved["s"] == "keep" and moved["n"] is None


def test_to_device_refuses_a_batch_that_contains_itself():
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match=r"nested more than 64 levels"):
        to_device(loop, "cpu")


def test_the_ragged_memory_is_per_kind_of_rows_so_a_shared_collate_starts_fresh():
    """packed_collate is one shared object: a field 1 that was ragged int64 token ids in
    one dataset does not make another dataset's float32 2-vectors in field 1 ragged."""
    collate = PackedCollate()
    assert isinstance(collate([(np.arange(3), np.arange(2)), (np.arange(1), np.arange(1))])[1],
                      PackedSequence)
    _, vec = collate([(np.arange(i + 2), np.full(2, i, dtype=np.float32)) for i in range(3)])
    assert vec.dtype == torch.float32 and vec.tolist() == [[0, 0], [1, 1], [2, 2]]
