import torch, time
from neuralode import odeint
from neuralode.integrate_per_sample import solve_per_sample

torch.set_num_threads(1)
B = 256
mu = torch.logspace(-1, 1, B, dtype=torch.float64)[:, None]


def vdp(t, y):
    x, v = y[:, :1], y[:, 1:]
    return torch.cat([v, mu * (1 - x * x) * v - x], dim=1)


y0 = torch.cat([torch.full((B, 1), 2.0), torch.zeros(B, 1)], 1).double()
T = torch.linspace(0, 10, 11, dtype=torch.float64)
s = time.perf_counter()
ys, st = odeint(vdp, y0, T, rtol=1e-6, atol=1e-6, return_stats=True)
t_shared = time.perf_counter() - s
s = time.perf_counter()
yp, ps = solve_per_sample(vdp, y0, T, rtol=1e-6, atol=1e-6)
t_ps = time.perf_counter() - s
ref = odeint(vdp, y0, T, rtol=1e-10, atol=1e-10)
print(
    "shared NFE",
    st.nfe,
    "total",
    st.nfe * B,
    "time",
    t_shared,
    "err",
    (ys - ref).abs().max().item(),
)
print(
    "per-sample NFE sum",
    ps.nfe.sum().item(),
    "max",
    ps.nfe.max().item(),
    "min",
    ps.nfe.min().item(),
    "time",
    t_ps,
    "err",
    (yp - ref).abs().max().item(),
)
print("ratio total NFE", st.nfe * B / ps.nfe.sum().item())
