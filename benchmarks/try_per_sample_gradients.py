import torch
from neuralode import odeint

torch.manual_seed(0)
B = 64


class VdP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mu = torch.logspace(-1, 0, B, dtype=torch.float64)[:, None]
        self.w = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

    def forward(self, t, y):
        x, v = y[:, :1], y[:, 1:]
        return torch.cat([v, self.w * self.mu * (1 - x * x) * v - x], dim=1)


f = VdP()
y0 = torch.cat([torch.full((B, 1), 2.0), torch.zeros(B, 1)], 1).double().requires_grad_()
T = torch.linspace(0, 5, 6, dtype=torch.float64)
ref = odeint(f, y0, T, rtol=1e-10, atol=1e-10)
gr = torch.autograd.grad(ref[-1].square().sum(), (y0, f.w))
for grad in ["backprop", "adjoint"]:
    ys, st = odeint(
        f,
        y0,
        T,
        rtol=1e-7,
        atol=1e-7,
        options={"per_sample": True},
        gradient=grad,
        return_stats=True,
    )
    g = torch.autograd.grad(ys[-1].square().sum(), (y0, f.w))
    print(
        grad,
        (ys - ref).abs().max().item(),
        st.per_sample.nfe.sum().item(),
        (g[0] - gr[0]).abs().max().item(),
        (g[1] - gr[1]).abs().item(),
        gr[1].item(),
    )
