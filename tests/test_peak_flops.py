"""The MFU denominator: the dense peak of a known GPU for the dtype trained in, from model.py's table, matched by
the name torch gives the device; else measured with matmuls."""
import pytest
import torch

import model
from model import device_peak_flops, table_peak_flops


@pytest.mark.parametrize("name, dtype, peak", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),  # SXM
    ("NVIDIA H100 PCIe", "bfloat16", 756e12),
    ("NVIDIA H100 NVL", "float16", 835e12),
    ("NVIDIA H200", "bfloat16", 989e12),
    ("NVIDIA H200", "float32", 495e12),  # TF32, as train.py's float32 on CUDA
    ("NVIDIA H200 NVL", "bfloat16", 835e12),
    ("NVIDIA A100-SXM4-80GB", "bfloat16", 312e12),
    ("NVIDIA A100 80GB PCIe", "float32", 156e12),
    ("NVIDIA A10", "bfloat16", 125e12),  # not the A100's
    ("NVIDIA A10G", "bfloat16", None),  # no spec sheet: measured
    ("NVIDIA L40S", "bfloat16", 362e12),
    ("NVIDIA L4", "bfloat16", 121e12),  # not the L40S's
    ("NVIDIA GeForce RTX 4090", "float16", 165e12),
    ("Tesla V100-SXM2-16GB", "float16", 125e12),
    ("Tesla V100-SXM2-16GB", "bfloat16", None),  # no bfloat16 tensor cores
    ("Tesla V100-PCIE-16GB", "float16", 112e12),  # torch spells it PCIE
    ("NVIDIA GeForce GTX 1080", "float32", None),
])
def test_table(name, dtype, peak):
    assert table_peak_flops(name, dtype) == peak


def test_device_peak_flops_says_where_it_comes_from(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    assert device_peak_flops("cuda", "bfloat16") == (989e12, "NVIDIA H200's dense bfloat16 peak (spec sheet)")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA A10G")
    monkeypatch.setattr(model, "measure_peak_flops", lambda device, dtype: 70e12)
    assert device_peak_flops("cuda:1", "bfloat16") == (70e12, "measured with bfloat16 matmuls on NVIDIA A10G")


def test_measured_peak_on_cpu():
    peak, source = device_peak_flops("cpu", "float32")
    assert 1e8 < peak < 1e14 and source == "measured with float32 matmuls on cpu"
