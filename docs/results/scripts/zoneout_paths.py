"""Forward + backward of one LSTM layer (400 -> 400, T=35, B=20, recurrent dropout 0.2) on the
paths a call can take: the fused C kernels without and with zoneout, the torch-op loops with
zoneout (no C compiler, or RNNDROP_FAST_CEXT=0), the reference loop (zoneout and learned
recurrent rates on CUDA). One torch thread, mean of 5 after a warm-up. Measures only.

    python docs/results/scripts/zoneout_paths.py
"""
import os
import time

import torch

import rnndrop
from rnndrop import _recurrence, fast

torch.set_num_threads(1)
torch.manual_seed(0)
x = torch.randn(35, 20, 400)


def ms(layer, n=5):
    layer(x)[0].sum().backward()
    t0 = time.perf_counter()
    for _ in range(n):
        layer(x)[0].sum().backward()
    return (time.perf_counter() - t0) / n * 1e3


plain = rnndrop.LSTM(400, 400, dropout_hidden=0.2)
zoned = rnndrop.LSTM(400, 400, dropout_hidden=0.2, zoneout_hidden=0.05, zoneout_cell=0.5)
learned = rnndrop.LSTM(400, 400, dropout_hidden=0.2, learn_dropout=True)
print(f"variational, fused C kernels      {ms(plain):7.1f} ms")
print(f"zoneout, fused C kernels          {ms(zoned):7.1f} ms")
print(f"learned rates, fused C kernels    {ms(learned):7.1f} ms")
os.environ["RNNDROP_FAST_CEXT"] = "0"          # read at every call
print(f"zoneout, torch-op loops           {ms(zoned):7.1f} ms")
fast.select = lambda cell, *a: getattr(_recurrence, f"{cell.lower()}_recurrence")
print(f"zoneout, reference loop           {ms(zoned):7.1f} ms")
