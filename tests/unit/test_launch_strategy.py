"""The strategy a launch asks for is the one that runs, or the run stops with the reason; every run names the strategy
it really ran. The 2-process launches of these checks are in tests/matrix/test_fsdp_matrix.py."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from hf_llm.config import TrainConfig
from hf_llm.errors import ConfigError
from hf_llm.train import run
from hf_llm.train.run import honour_launch, strategy_name

LAUNCH_VARS = ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "FSDP_VERSION", "ACCELERATE_USE_CPU")


@pytest.fixture
def launch_env(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _acc(kind: DistributedType, processes: int = 2, **state) -> SimpleNamespace:
    return SimpleNamespace(distributed_type=kind, num_processes=processes,
                           state=SimpleNamespace(deepspeed_plugin=None, **state))


def test_a_launch_whose_processes_train_alone_is_refused(launch_env):
    # The ddp/fsdp config on a machine without GPUs and without ACCELERATE_USE_CPU: torchrun starts 2 processes,
    # accelerate gives each a world of one.
    with pytest.raises(ConfigError, match="started 2 processes but accelerate set up NO over 1.*ACCELERATE_USE_CPU=1"):
        honour_launch(_acc(DistributedType.NO, processes=1), world=2)
    # What accelerate 1.16 really sets up there with the gloo backend we hand it: a group of 2 that wraps nothing.
    with pytest.raises(ConfigError, match="started 2 processes but accelerate set up NO over 2.*ACCELERATE_USE_CPU=1"):
        honour_launch(_acc(DistributedType.NO, processes=2), world=2)
    launch_env.setenv("ACCELERATE_USE_FSDP", "true")  # the same check comes first for the FSDP config
    launch_env.setenv("FSDP_VERSION", "2")
    with pytest.raises(ConfigError, match="set up NO over 2.*ACCELERATE_USE_CPU=1"):
        honour_launch(_acc(DistributedType.NO, processes=2), world=2)
    launch_env.delenv("ACCELERATE_USE_FSDP")
    honour_launch(_acc(DistributedType.NO, processes=1), world=1)
    honour_launch(_acc(DistributedType.MULTI_CPU), world=2)


def test_deepspeed_turned_into_ddp_is_refused(launch_env):
    launch_env.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    launch_env.setenv("ACCELERATE_USE_CPU", "1")
    with pytest.raises(ConfigError, match="asks for DeepSpeed but accelerate set up MULTI_CPU.*without ACCELERATE_USE"):
        honour_launch(_acc(DistributedType.MULTI_CPU), world=2)
    honour_launch(_acc(DistributedType.DEEPSPEED), world=2)


def test_fsdp_on_cpus_is_switched_on_for_fsdp2_and_refused_for_fsdp1(launch_env):
    switched = []
    launch_env.setattr(run, "fsdp_on_cpu", switched.append)
    launch_env.setenv("ACCELERATE_USE_FSDP", "true")
    launch_env.setenv("FSDP_VERSION", "2")
    acc = _acc(DistributedType.MULTI_CPU)
    honour_launch(acc, world=2)
    assert switched == [acc]
    launch_env.setenv("FSDP_VERSION", "1")
    with pytest.raises(ConfigError, match="asks for FSDP \\(fsdp_version 1\\) but accelerate set up MULTI_CPU"):
        honour_launch(acc, world=2)
    honour_launch(_acc(DistributedType.FSDP), world=2)  # a GPU launch: accelerate did it itself
    assert len(switched) == 1


def test_strategy_names():
    assert strategy_name(_acc(DistributedType.NO, processes=1)) == "single process"
    assert strategy_name(_acc(DistributedType.MULTI_CPU)) == "DDP"
    zero = {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"},
                                  "offload_param": {"device": "none"}}}
    ds = _acc(DistributedType.DEEPSPEED)
    ds.state.deepspeed_plugin = SimpleNamespace(deepspeed_config=zero)
    assert strategy_name(ds) == "ZeRO-3 (offload: optimizer to cpu)"
    ds.state.deepspeed_plugin = SimpleNamespace(deepspeed_config={"zero_optimization": {"stage": 2}})
    assert strategy_name(ds) == "ZeRO-2"
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy

    fsdp = _acc(DistributedType.FSDP, fsdp_plugin=SimpleNamespace(fsdp_version=2, cpu_offload=OffloadPolicy()))
    assert strategy_name(fsdp) == "FSDP2"
    fsdp.state.fsdp_plugin.cpu_offload = CPUOffloadPolicy()
    assert strategy_name(fsdp) == "FSDP2 (offload: parameters to cpu)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~10-20 s: gloo, fully_shard and a gathered state dict in this process
def test_fsdp_config_on_one_cpu_process_runs_accelerates_fsdp2(launch_env, tmp_path, one_thread):
    """In this process, as `ACCELERATE_USE_CPU=1 accelerate launch --config_file configs/accelerate/fsdp.yaml
    --num_processes 1` would start it: accelerate alone sets up MULTI_CPU (DDP); make_accelerator switches it to
    FSDP2, and prepare shards the model with fully_shard (DTensor parameters), which trains and gathers a full
    state dict. Fails when an accelerate upgrade changes what the switch relies on."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor
    from transformers import LlamaConfig, LlamaForCausalLM

    env = {"ACCELERATE_USE_CPU": "1", "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "LOCAL_RANK": "0",
           "RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port()), "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
           "FSDP_RESHARD_AFTER_FORWARD": "true", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true",
           "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT"}
    for name, value in env.items():
        launch_env.setenv(name, value)
    try:
        acc = run.make_accelerator(TrainConfig(report_to=["none"]), "fp32", tmp_path)
        assert acc.distributed_type == DistributedType.FSDP and acc.is_fsdp2 and strategy_name(acc) == "FSDP2"
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2))
        reference = {k: v.clone() for k, v in model.state_dict().items()}
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model, optimizer = acc.prepare(model, optimizer)
        assert isinstance(model, FSDPModule) and all(isinstance(p, DTensor) for p in model.parameters())
        assert sum(isinstance(m, FSDPModule) for m in model.modules()) >= 3  # each decoder layer and the root
        ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
        acc.backward(model(input_ids=ids, labels=ids).loss)
        optimizer.step()
        full = acc.get_state_dict(model)
        assert set(full) >= {k for k in reference if "rotary" not in k}
        changed = [k for k in full if not torch.equal(full[k], reference[k])]
        assert changed and all(type(v) is torch.Tensor for v in full.values())
        with pytest.raises(ConfigError, match="fused_loss=true cannot apply under FSDP"):
            run.check_strategy_options(acc, TrainConfig(report_to=["none"], fused_loss="true"))
        run.check_strategy_options(acc, TrainConfig(report_to=["none"], fused_loss="auto"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        from ..conftest import reset_accelerate_state

        reset_accelerate_state()


def test_a_gathered_state_dict_does_not_store_the_tied_head_twice():
    """FSDP's gathered state dict holds `lm_head.weight` as its own copy of the embedding; the export drops it (the
    model ties it again on load), and keeps it where the head is not tied or differs."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_llm.train.checkpoint import drop_tied_copies

    def model(tie: bool):
        return LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tie))

    tied = model(True)
    gathered = {k: v.clone() for k, v in tied.state_dict().items()}  # separate storage, as after a gather
    assert "lm_head.weight" in gathered
    kept = drop_tied_copies(gathered, tied)
    assert set(kept) == set(gathered) - {"lm_head.weight"}
    untied = model(False)
    assert drop_tied_copies(dict(untied.state_dict()), untied).keys() == untied.state_dict().keys()
    gathered["lm_head.weight"] = gathered["lm_head.weight"] + 1  # not a copy: kept
    assert "lm_head.weight" in drop_tied_copies(gathered, tied)
