"""`python -m torch.distributed.run --nproc_per_node 2 tests/integration/fsdp_on_cpu.py train ...`: the llada
command line with accelerate's FSDP2, as configs/accelerate/fsdp.yaml asks for it, on CPU processes.

accelerate turns any CPU launch into DDP ("MULTI_CPU"), while torch's FSDP2 itself runs on CPUs over
gloo. So the accelerator is told it is FSDP after it is built: the trainer then goes through
accelerate's FSDP code (fully_shard per Transformer block, DTensor parameters, sharded optimizer
state, the gathered state dict, the optimizer's sharded checkpoints), as on GPUs.
"""

from __future__ import annotations

import sys

import accelerate
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin


class FSDPOnCPU(accelerate.Accelerator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for state in (self.state, accelerate.PartialState()):
            state.distributed_type = DistributedType.FSDP
        self.state.fsdp_plugin = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap", transformer_cls_names_to_wrap=["Block"],
            state_dict_type="SHARDED_STATE_DICT", reshard_after_forward=True)


if __name__ == "__main__":
    accelerate.Accelerator = FSDPOnCPU
    from llada.cli import main

    sys.argv[0] = "llada"
    raise SystemExit(main())
