"""Reference trajectories from torch.optim, for lit's optimizer and scheduler tests.

Run with the torch that lit links against:
    scripts/with-torch python tests/data/optim_reference.py > tests/data/optim_reference.json
Everything is computed in float64 from closed-form inputs that the Rust test rebuilds exactly.
"""
import json, math
import torch

torch.set_default_dtype(torch.float64)
STEPS = 20


def problem():
    i = torch.arange(12.0).view(3, 4)
    w = (torch.sin(i) * 0.5).clone().requires_grad_(True)
    b = (torch.cos(torch.arange(4.0)) * 0.1).clone().requires_grad_(True)
    r, c = torch.meshgrid(torch.arange(5.0), torch.arange(3.0), indexing="ij")
    x = torch.sin(r * 0.7 + c)
    r, c = torch.meshgrid(torch.arange(5.0), torch.arange(4.0), indexing="ij")
    y = torch.cos(r + 0.3 * c)
    return w, b, x, y


def loss_fn(w, b, x, y):
    return ((x @ w + b - y) ** 2).mean() + 0.1 * (w ** 4).sum()


OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd_momentum_dampening": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1),
    "sgd_nesterov_wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adam_wd_amsgrad": lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.99), weight_decay=0.01, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01),
    "rmsprop_centered_momentum_wd": lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.9, centered=True, weight_decay=0.01),
    # Parameter groups: no weight decay and a larger learning rate on the bias.
    "adamw_groups": lambda p: torch.optim.AdamW(
        [{"params": [p[0]]}, {"params": [p[1]], "lr": 0.05, "weight_decay": 0.0}], lr=0.01, weight_decay=0.1
    ),
}

out = {"optimizers": {}, "schedulers": {}}
for name, make in OPTIMIZERS.items():
    w, b, x, y = problem()
    opt = make([w, b])
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = loss_fn(w, b, x, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    out["optimizers"][name] = {"losses": losses, "w": w.detach().flatten().tolist(), "b": b.detach().flatten().tolist()}

S = torch.optim.lr_scheduler
SCHEDULERS = {
    "step": lambda o: S.StepLR(o, step_size=5, gamma=0.5),
    "multistep": lambda o: S.MultiStepLR(o, milestones=[3, 7, 12], gamma=0.3),
    "exponential": lambda o: S.ExponentialLR(o, gamma=0.9),
    "cosine": lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
    "linear": lambda o: S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=5),
    "lambda": lambda o: S.LambdaLR(o, lambda e: 0.95 ** e),
    "onecycle": lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=30),
    "sequential": lambda o: S.SequentialLR(
        o, [S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=5), S.CosineAnnealingLR(o, T_max=10)], milestones=[5]
    ),
}
for name, make in SCHEDULERS.items():
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    sched = make(opt)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(29):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    out["schedulers"][name] = lrs

metrics = [1.0, 0.9, 0.95, 0.96, 0.97, 0.8, 0.81, 0.82, 0.83, 0.7, 0.7, 0.7, 0.7, 0.69, 0.71, 0.72, 0.73, 0.74, 0.75, 0.76]
p = torch.zeros(1, requires_grad=True)
opt = torch.optim.SGD([p], lr=0.1)
sched = S.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=2)
lrs = []
for m in metrics:
    opt.step()
    sched.step(m)
    lrs.append(opt.param_groups[0]["lr"])
out["schedulers"]["plateau"] = {"metrics": metrics, "lrs": lrs}

print(json.dumps(out, indent=1))
