"""The README's demo command runs (few steps here) and prints what it promises."""
import fastcollate.__main__ as cli


def test_demo_trains_and_compares_collates(capsys):
    cli.main(["--steps", "12", "--batch-size", "16"])
    out = capsys.readouterr().out
    assert "step   12/12" in out
    assert "fastcollate.PackedCollate" in out and "pad_sequence + pack_padded_sequence" in out
    assert "BucketBatchSampler" in out and "random (shuffle=True)" in out


def test_bench_table_lists_every_workload(capsys):
    cli.main(["bench", "--budget", "0.001"])
    out = capsys.readouterr().out
    for name in ("tokens", "short-many", "speech", "embed", "ties"):
        assert name in out
