"""SDTT (``nanodd.distill.sdtt``) on the exact toy (K = 3 symbols, L = 3): the recorded targets are the
teacher's distributions at the reveals, their expectation over every teacher trajectory (enumerated, each
forced through crafted noise) is what the factorised two-step walk implies, the loss vanishes for a
student equal to its target, only the student learns, and distillation rounds of a table "network" with
exact expected gradients move its few-step samples towards p."""

import itertools
import math
from pathlib import Path

import pytest
import torch

from nanodd.distill import sdtt
from nanodd.functional import make_apply, params_of
from nanodd.methods import d3pm, mdlm
from nanodd.model import DiT, DiTConfig
from nanodd.processes.absorbing import Absorbing, reveal_prob
import nanodd.samplers.loop as loop
from test_purity import imported_modules, is_forbidden
from toy import exact_apply, toy_distribution

N, L = 3, 3
PROC = Absorbing(n_symbols=N)
K, M = PROC.K, PROC.mask_id
D = mdlm.diffusion(mdlm.MDLMConfig(process=PROC))
STATES = torch.tensor(list(itertools.product(range(K), repeat=L)))  # [K^L, L], lexicographic
PLACE = K ** torch.arange(L - 1, -1, -1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy():
    seqs, p = toy_distribution(n_symbols=N, L=L)
    return seqs, p, exact_apply(seqs, p, M)


def conditional(seqs, p, z):
    """p(x0^i = v | z) [L, N] by enumeration of the sequences consistent with the clean tokens of z [L]."""
    w = p * ((z == M) | (z == seqs)).all(-1)
    return torch.einsum("n,nlk->lk", w, torch.nn.functional.one_hot(seqs, N).double()) / w.sum()


# --- every teacher trajectory, each forced by crafted noise -------------------------------------------------
def trajectories(cfg, zt, k):
    """Rows zt [R, L] at k [R] repeated once per joint fate of the tokens (fate 0: never revealed, 1 + j N + v:
    revealed at step j as v), with the noise that forces it: u = 0 reveals, u = 1 keeps the mask, a Gumbel of
    1e6 picks v.  Returns (zt, k, fates [R F, L], noise)."""
    m = cfg.teacher_steps
    fates = torch.tensor(list(itertools.product(range(1 + m * N), repeat=L)))
    F = len(fates)
    zt, k, f = zt.repeat_interleave(F, 0), k.repeat_interleave(F, 0), fates.repeat(len(zt), 1)
    at = [(f > 0) & ((f - 1) // N == j) for j in range(m)]
    pick = torch.nn.functional.one_hot((f - 1) % N, K).double() * 1e6
    noise = {
        "k": k,
        "u_steps": torch.stack([torch.where(a, 0.0, 1.0) for a in at]),
        "gumbel_steps": torch.stack([torch.where(a[..., None], pick, 0.0) for a in at]),
    }
    return zt, k, f, noise


def fate_probability(cfg, zt, k, f, p_revealed):
    """P(fates) per row [R]: the reveal pattern's probability times p_revealed [R, L], the probability the
    teacher gave each revealed token's value (1 where none is revealed)."""
    r = torch.stack(
        [
            reveal_prob(loop.alpha(D, sdtt.times(cfg, k, j)), loop.alpha(D, sdtt.times(cfg, k, j + 1)))
            for j in range(cfg.teacher_steps)
        ],
        -1,
    )
    masked_until = torch.cumprod(torch.cat([torch.ones_like(r[:, :1]), 1 - r], -1), -1)  # [R, m + 1]
    step = ((f - 1) // N).clamp(min=0)
    revealed = masked_until.gather(-1, step) * r.gather(-1, step) * p_revealed
    never = masked_until[:, -1:].expand_as(f)
    return torch.where(zt == M, torch.where(f == 0, never, revealed), (f == 0).double()).prod(-1)


def states_along(zt, f, j):
    """z^j: z_t with the tokens revealed before step j filled in, [R, L]."""
    return torch.where((zt == M) & (f > 0) & ((f - 1) // N < j), (f - 1) % N, zt)


def brute_force(cfg, seqs, p, zt, f):
    """(target, P(fates)) per row by enumeration alone: each masked token's p(x0^i | z^{j_i}) [R, L, N]
    (j_i its reveal step, or the last step, or m with unrevealed="end") and the trajectory's probability."""
    m = cfg.teacher_steps
    last = m if cfg.unrevealed == "end" else m - 1
    step = torch.where(f > 0, (f - 1) // N, last)
    conds = torch.stack([torch.stack([conditional(seqs, p, z) for z in states_along(zt, f, j)]) for j in range(m + 1)])
    target = conds.gather(0, step[None, ..., None].expand(1, *step.shape, N))[0]  # [R, L, N]
    p_step = conds.gather(0, ((f - 1) // N).clamp(min=0)[None, ..., None].expand(1, *f.shape, N))[0]
    p_revealed = torch.where(f > 0, p_step.gather(-1, ((f - 1) % N)[..., None]).squeeze(-1), 1.0)
    return target, p_revealed


@pytest.mark.parametrize("unrevealed", ["last", "end"])
def test_each_recorded_target_is_the_teachers_distribution_where_the_token_was_revealed(toy, unrevealed):
    seqs, p, exact = toy
    cfg = sdtt.SDTTConfig(D, student_steps=4, unrevealed=unrevealed)
    zt0 = torch.tensor([[M, M, M], [M, 1, M], [2, M, M], [M, 0, 2]])
    zt, k, f, noise = trajectories(cfg, zt0, torch.tensor([4, 2, 3, 1]))
    log_target = sdtt.target(exact, None, zt, k, noise, cfg)
    want, _ = brute_force(cfg, seqs, p, zt, f)
    masked = zt == M
    assert torch.allclose(log_target[..., :N].exp()[masked], want[masked], atol=1e-12, rtol=0)
    assert (log_target[..., M] == -math.inf).all()


def expected_target(cfg, seqs, p, exact, zt0, k0):
    """E[target] [R, L, N] over every teacher trajectory from each row of zt0, weighted by enumeration."""
    zt, k, f, noise = trajectories(cfg, zt0, k0)
    _, p_revealed = brute_force(cfg, seqs, p, zt, f)
    w = fate_probability(cfg, zt, k, f, p_revealed).view(len(zt0), -1)  # [R, F]
    assert torch.allclose(w.sum(-1), torch.ones(len(zt0), dtype=torch.float64), atol=1e-12)
    targets = sdtt.target(exact, None, zt, k, noise, cfg)[..., :N].exp().view(len(zt0), -1, L, N)
    return torch.einsum("rf,rfln->rln", w, targets)


@pytest.mark.parametrize("unrevealed", ["last", "end"])
def test_with_two_masks_the_expected_target_is_the_exact_marginal(toy, unrevealed):
    """One other token revealed from its exact marginal averages the conditional back to p(x0^i | z_t)."""
    seqs, p, exact = toy
    cfg = sdtt.SDTTConfig(D, student_steps=4, unrevealed=unrevealed)
    zt0 = torch.tensor([[M, 1, M], [2, M, M], [M, M, 0], [M, 0, 2]])
    mean = expected_target(cfg, seqs, p, exact, zt0, torch.tensor([4, 2, 3, 1]))
    for row, z in zip(mean, zt0):
        want = conditional(seqs, p, z)
        assert torch.allclose(row[z == M], want[z == M], atol=1e-12, rtol=0)


def test_with_three_masks_the_expected_target_is_the_factorised_walks_marginal(toy):
    """From all masks the teacher's first step reveals the other two tokens independently, from the product
    of their marginals, so E[target^i] is not p(x0^i) but (closed form, "last"):
        r1 m_i + (1 - r1) sum_{R subset of the others} r1^|R| (1 - r1)^(2 - |R|) sum_{v_R} prod m_j(v_j) p(x0^i | v_R)."""
    seqs, p, exact = toy
    cfg = sdtt.SDTTConfig(D, student_steps=2)
    k = torch.tensor([2])  # t = 1 -> 3/4 -> 1/2
    mean = expected_target(cfg, seqs, p, exact, torch.full((1, L), M), k)[0]
    r1 = float(reveal_prob(loop.alpha(D, sdtt.times(cfg, k, 0)), loop.alpha(D, sdtt.times(cfg, k, 1))))
    marginal = conditional(seqs, p, torch.full((L,), M))  # [L, N]
    for i in range(L):
        others = [j for j in range(L) if j != i]
        later = torch.zeros(N, dtype=torch.float64)
        for n in range(len(others) + 1):
            for R in itertools.combinations(others, n):
                for v in itertools.product(range(N), repeat=n):
                    z = torch.full((L,), M)
                    z[list(R)] = torch.tensor(v, dtype=torch.long)
                    weight = r1**n * (1 - r1) ** (2 - n) * math.prod(float(marginal[j, vj]) for j, vj in zip(R, v))
                    later += weight * conditional(seqs, p, z)[i]
        assert torch.allclose(mean[i], r1 * marginal[i] + (1 - r1) * later, atol=1e-12, rtol=0)
    assert (mean - marginal).abs().max() > 1e-3  # the toy's tokens are correlated: the bias is real


# --- the loss -----------------------------------------------------------------------------------------------
def draws(cfg, x0, seed=0):
    return sdtt.noise(torch.Generator().manual_seed(seed), x0, cfg)


@pytest.mark.parametrize("divergence", ["kl", "mse", "tvd"])
def test_the_loss_is_zero_for_a_student_equal_to_its_target(toy, divergence):
    seqs, p, exact = toy
    cfg = sdtt.SDTTConfig(D, student_steps=4, divergence=divergence)
    x0 = seqs[torch.multinomial(p, 256, replacement=True, generator=torch.Generator().manual_seed(1))]
    noise = draws(cfg, x0)

    def student(params, z, t):  # one call that returns the teacher's two-step target for these draws
        return sdtt.target(exact, None, z, noise["k"], noise, cfg)

    value, aux = sdtt.loss(student, None, x0, noise, cfg=cfg, teacher_params=None)
    assert abs(value) < 1e-9 and aux["bpt"] == value / math.log(2)  # 0 up to float64 rounding (either sign)
    teacher_value, _ = sdtt.loss(exact, None, x0, noise, cfg=cfg, teacher_params=None)
    assert teacher_value > 1e-3  # the one-step teacher at 2 dt is not its own two-step target


def test_the_one_step_teacher_is_its_own_target_only_where_one_token_is_masked(toy):
    """One masked token: whatever the draws, its target is p(x0^i | z_t), the teacher's own one-step output,
    so the loss of the teacher as student is 0; all masks with two tokens revealed first: KL > 0."""
    seqs, p, exact = toy
    cfg = sdtt.SDTTConfig(D, student_steps=2)
    zt, k, f, noise = trajectories(cfg, torch.tensor([[1, M, 0], [M, M, M]]), torch.tensor([2, 2]))
    log_target = sdtt.target(exact, None, zt, k, noise, cfg)
    log_q = sdtt.log_p(exact, None, D, zt, sdtt.times(cfg, k, 0))
    kl = torch.where(zt == M, sdtt.divergence(log_target, torch.where((zt == M)[..., None], log_q, 0.0), "kl", N), 0.0)
    one, three = kl.view(2, -1, L)
    assert one.abs().max() < 1e-12
    f = f.view(2, -1, L)[1]
    first = (f > 0) & ((f - 1) // N == 0)  # revealed in the first step
    case = first[:, 1] & first[:, 2] & ~first[:, 0]  # tokens 1 and 2 first, token 0 later or never
    assert (three[case, 0] > 1e-4).all()


def tiny_dit(seed):
    torch.manual_seed(seed)
    return DiT(DiTConfig(vocab_size=K, d_model=32, n_heads=2, n_blocks=2, cond_dim=16, dropout=0.0))


def test_gradients_reach_the_student_only():
    """One apply, two dicts: the teacher's is left without a gradient and bitwise unchanged by an optimizer
    step on the student, and torch.func.grad over the student dict equals .backward()."""
    model, teacher_model = tiny_dit(0), tiny_dit(1)
    apply, student = make_apply(model), params_of(model)
    teacher = params_of(teacher_model)  # live leaves that require grad: the loss must not touch them
    before = {k: v.detach().clone() for k, v in teacher.items()}
    cfg = sdtt.SDTTConfig(D, student_steps=8)
    x0 = torch.randint(0, N, (8, 16), generator=torch.Generator().manual_seed(0))
    noise = draws(cfg, x0)
    value, aux = sdtt.loss(apply, student, x0, noise, cfg=cfg, teacher_params=teacher)
    assert value > 0 and set(aux) == {"bpt", "divergence", "ce"}
    value.backward()
    assert all(v.grad is None for v in teacher.values())
    grads = {k: v.grad.clone() for k, v in student.items()}
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0
    loss = sdtt.make_loss(teacher, cfg)
    func = torch.func.grad(lambda ps: loss(apply, ps, x0, noise)[0])({k: v.detach() for k, v in student.items()})
    assert all(torch.allclose(func[k], grads[k], atol=1e-6, rtol=1e-4) for k in grads)
    torch.optim.AdamW(model.parameters(), lr=1e-2).step()
    assert all(torch.equal(teacher[k].detach(), before[k]) for k in teacher)
    assert not all(torch.equal(student[k].detach(), before[k]) for k in student)


def test_a_d3pm_teacher_is_called_on_its_own_steps():
    cfg = sdtt.SDTTConfig(d3pm.diffusion(d3pm.D3PMConfig(T=16, process=PROC)), student_steps=4, teacher_steps=4)
    seen = []

    def teacher(params, z, t):
        seen.append(t.clone())
        return torch.zeros(*z.shape, K)

    x0 = torch.zeros(5, L, dtype=torch.long)
    noise = draws(cfg, x0)
    sdtt.target(teacher, None, torch.full_like(x0, M), noise["k"], noise, cfg)
    assert torch.equal(torch.stack(seen), 4 * noise["k"][None] - torch.arange(4)[:, None])  # steps 4k, 4k-1, ..
    with pytest.raises(ValueError, match="must be at most the model's T = 16"):
        sdtt.SDTTConfig(cfg.diffusion, student_steps=5, teacher_steps=4)


def test_on_a_grid_that_does_not_divide_T_both_are_called_at_the_samplers_times():
    """T = 10, a student of 3 steps, a teacher of 6: the times snap to tenths as the samplers' do, and the
    teacher's grid holds the student's at every other point."""
    diffusion = d3pm.diffusion(d3pm.D3PMConfig(T=10, process=PROC))
    cfg = sdtt.SDTTConfig(diffusion, student_steps=3)
    k = torch.tensor([1, 2, 3])
    student, teacher = loop.time_grid(diffusion, 3), loop.time_grid(diffusion, 6)
    assert student == teacher[::2] == [1.0, 0.7, 0.3, 0.0]
    for j in range(3):
        assert sdtt.times(cfg, k, j).tolist() == [teacher[2 * (3 - int(ki)) + j] for ki in k]
    assert sdtt.times(cfg, k, 0).tolist() == [student[3 - int(ki)] for ki in k]


# --- distillation rounds on the toy, with exact expected gradients -------------------------------------------
def table_apply(params, zt, t):
    """A time-agnostic "network": a learnable table of logits per state z_t, [K^L, L, K]."""
    return params["logits"][(zt * PLACE).sum(-1)]


def sample_distribution(params, steps):
    """The exact distribution of the ancestral sampler's samples on ``steps`` steps, over seqs' order [N^L]."""
    dist = torch.zeros(len(STATES), dtype=torch.float64)
    dist[-1] = 1  # all masks
    grid = loop.time_grid(D, steps)
    for t, s in zip(grid[:-1], grid[1:]):
        t_b, s_b = torch.tensor([t], dtype=torch.float64), torch.tensor([s], dtype=torch.float64)
        prob = sdtt.log_p(table_apply, params, D, STATES, t_b.expand(len(STATES))).double().exp()  # [S, L, K]
        r = reveal_prob(loop.alpha(D, t_b), loop.alpha(D, s_b))
        masked = STATES == M
        token = torch.where(masked[..., None], r * prob, prob)
        token[..., M] = torch.where(masked, 1 - r, 0.0)
        dist = dist @ token[:, torch.arange(L)[None, :], STATES].prod(-1)  # P(z_s | z_t) [S, S]
    return dist[(STATES != M).all(-1)]


def distill(cfg, teacher, seqs, p, iters=150):
    """One round: the student starts as the teacher and follows the exact gradient of the expected loss over
    x0 ~ p, k, z_t and every teacher trajectory.  KL is linear in its target, so that loss is, up to a
    constant, the KL from each (k, z_t)'s mean target, which keeps the sums small."""
    S = cfg.student_steps
    k0 = torch.arange(1, S + 1).repeat_interleave(len(STATES))
    zt0 = STATES.repeat(S, 1)
    alpha = loop.alpha(D, sdtt.times(cfg, k0, 0))[:, None, None]  # [R, 1, 1]
    per_token = torch.where(zt0[:, None] == M, 1 - alpha, torch.where(zt0[:, None] == seqs[None], alpha, 0.0))
    pz = (per_token.prod(-1) * p).sum(-1) / S  # P(k) q_t(z_t)
    zt, k, f, noise = trajectories(cfg, zt0, k0)
    log_target = sdtt.target(table_apply, teacher, zt, k, noise, cfg).double()
    p_revealed = torch.where(f > 0, log_target.exp().gather(-1, ((f - 1) % N)[..., None]).squeeze(-1), 1.0)
    w = fate_probability(cfg, zt, k, f, p_revealed).view(len(zt0), -1)
    mean = torch.einsum("rf,rflk->rlk", w, log_target.exp().view(len(zt0), -1, L, K))
    student = {"logits": teacher["logits"].clone().requires_grad_()}
    opt = torch.optim.Adam(student.values(), lr=0.05)
    masked = zt0 == M
    for _ in range(iters):
        log_q = torch.where(masked[..., None], sdtt.log_p(table_apply, student, D, zt0, sdtt.times(cfg, k0, 0)), 0.0)
        kl = torch.where(masked, sdtt.divergence(mean.log(), log_q, "kl", N), 0.0)
        opt.zero_grad()
        (pz * kl.sum(-1)).sum().backward()
        opt.step()
    return {"logits": student["logits"].detach()}


def tv(seqs, p, params, steps):
    return 0.5 * float((sample_distribution(params, steps) - p).abs().sum())


def test_distillation_rounds_move_few_step_samples_towards_p_for_a_teacher_blurred_at_high_noise(toy):
    """A teacher exact where at most one token is masked and tempered (logits x 0.3) where more are: two rounds
    8 -> 4 -> 2 steps.  SDTT carries its sharper low-noise conditionals up to the high-noise states, and the
    students sample closer to p at 4 and 2 steps than the teacher does."""
    seqs, p, exact = toy
    table = exact(None, STATES, None)
    teacher = {"logits": torch.where(((STATES == M).sum(-1) >= 2)[:, None, None], 0.3 * table, table).float()}
    four = distill(sdtt.SDTTConfig(D, student_steps=4), teacher, seqs, p)
    two = distill(sdtt.SDTTConfig(D, student_steps=2), four, seqs, p)
    assert tv(seqs, p, four, 4) < tv(seqs, p, teacher, 4) - 0.005  # measured 0.322 vs 0.332
    assert tv(seqs, p, two, 2) < tv(seqs, p, teacher, 2) - 0.01  # 0.396 vs 0.418
    assert tv(seqs, p, two, 4) < tv(seqs, p, four, 4)


def test_the_exact_denoiser_is_almost_a_fixed_point(toy):
    """The exact teacher's one-step marginals are already p(x0^i | z_t); its two-step targets differ only by
    the factorised walk's bias (three masks), so distillation barely moves it (and not towards p)."""
    seqs, p, exact = toy
    teacher = {"logits": exact(None, STATES, None).float()}
    four = distill(sdtt.SDTTConfig(D, student_steps=4), teacher, seqs, p)
    assert abs(tv(seqs, p, four, 4) - tv(seqs, p, teacher, 4)) < 2e-3  # measured +0.0002


def test_the_distillation_core_is_pure():
    """tests/test_purity.py walks the core's directories; nanodd/distill is held to the same rule here."""
    assert not sorted(filter(is_forbidden, imported_modules(Path(sdtt.__file__))))


# --- rounds through the unmodified shell --------------------------------------------------------------------
def test_rounds_train_through_the_shell_and_record_their_step_counts(corpus, tmp_path, capsys):
    from experiments import distill
    from nanodd.shell.trainer import train
    from nanodd.shell.workflows import load_checkpoint
    from test_seam import tiny

    from nanodd.methods import ar

    train(tiny(corpus, tmp_path / "run", mdlm.MDLMConfig(), max_iters=6))
    train(tiny(corpus, tmp_path / "judge", ar.ARConfig(), max_iters=2))
    args = [str(tmp_path / "run"), "--distill.rounds", "2", "--distill.iters-per-round", "3"]
    args += ["--distill.start-steps", "8", "--distill.judge", str(tmp_path / "judge"), "--distill.judge-samples", "4"]
    distill.cli(args)
    rounds = [tmp_path / "run" / "distill" / f"round-{r}" for r in (1, 2)]
    assert [distill.record(out)["steps"] for out in rounds] == [4, 2]
    assert all(distill.record(out)["gen_bpc"] > 0 and distill.record(out)["gen_bpc_se"] > 0 for out in rounds)
    assert distill.record(rounds[1])["teacher"] == str(rounds[0])
    student = load_checkpoint(rounds[1])
    assert student.path == rounds[1] and isinstance(student.cfg.method, mdlm.MDLMConfig)
    assert student.cfg.train.max_iters == 3 and student.cfg.train.init_from == str(rounds[0])
    err = capsys.readouterr().err
    assert "round 1: 8 -> 4 steps" in err and "round 2: 4 -> 2 steps" in err and err.count(", gen-BPC ") == 2
    distill.cli(args)  # finished rounds are skipped
    assert "resumed" not in capsys.readouterr().err
    assert distill.distilled_steps(rounds[1]) == 2 and distill.distilled_steps(tmp_path / "run") is None
    from experiments import text8

    text8.main(["sample", str(rounds[1]), "--sample.no-live", "--sample.ancestral.no-cache"])
    assert "1 sample(s), 2 network evaluations" in capsys.readouterr().err  # its own step count by default


def test_a_round_killed_mid_way_resumes_bitwise(corpus, tmp_path):
    """kill -9 in the middle of a round, run the same command again: the round ends in the state of an
    uninterrupted one (student, EMA, optimizer) after the same per-step losses."""
    import os
    import signal
    import subprocess
    import sys

    from nanodd.shell.trainer import train
    from test_checkpoint import ROOT, final_state, step_losses, wait_for_step
    from test_seam import tiny

    train(tiny(corpus, tmp_path / "run", mdlm.MDLMConfig(), max_iters=6, eval_interval=20, log_interval=1))
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

    def cmd(out):
        flags = ["--distill.rounds", "1", "--distill.iters-per-round", "100", "--distill.start-steps", "8"]
        return [sys.executable, "-m", "experiments.distill", str(tmp_path / "run"), *flags, "--distill.out", str(out)]

    subprocess.run(cmd(tmp_path / "whole"), check=True, cwd=ROOT, env=env, capture_output=True)
    proc = subprocess.Popen(cmd(tmp_path / "cut"), cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    cut = tmp_path / "cut" / "round-1"
    wait_for_step(cut, 50, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(step_losses(cut))
    assert killed_at < 100, "the round finished before it could be killed"
    done = subprocess.run(cmd(tmp_path / "cut"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    resumed_from = int(done.stderr.split("resumed from step ")[1].split()[0])
    assert 0 < resumed_from <= killed_at and "| bpt " in done.stderr and "| bound " not in done.stderr

    a, b = final_state(tmp_path / "whole" / "round-1", 100), final_state(cut, 100)
    for part in ("params", "ema", "opt"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    la, lb = step_losses(tmp_path / "whole" / "round-1"), step_losses(cut)
    assert [la[s] for s in range(resumed_from + 1, 101)] == [lb[s] for s in range(resumed_from + 1, 101)]


def test_the_benchmark_puts_every_round_beside_the_teacher_at_its_step_counts(corpus, tmp_path, capsys):
    from benchmarks import distillation
    from experiments import distill
    from nanodd.methods import ar
    from nanodd.shell.trainer import train
    from test_seam import tiny

    train(tiny(corpus, tmp_path / "run", mdlm.MDLMConfig(), max_iters=4))
    train(tiny(corpus, tmp_path / "judge", ar.ARConfig(), max_iters=4))
    with pytest.raises(SystemExit):  # no round yet: one line
        distillation.cli([str(tmp_path / "run"), "--judge", str(tmp_path / "judge")])
    assert "holds no finished round; distil first" in capsys.readouterr().err
    distill.cli(
        [
            str(tmp_path / "run"),
            "--distill.rounds",
            "2",
            "--distill.iters-per-round",
            "2",
            "--distill.start-steps",
            "16",
        ]
    )
    args = [
        str(tmp_path / "run"),
        "--judge",
        str(tmp_path / "judge"),
        "--batch",
        "2",
        "--batches",
        "1",
        "--single",
        "1",
    ]
    distillation.cli(args)
    rows = [
        line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith(("| teacher", "| round"))
    ]
    labels = [r[0].lstrip("| ") for r in rows]
    assert labels == [
        "teacher, ancestral 1000, no cache, fp32 (nanoDD's)",
        *[f"teacher, ancestral {n}" for n in (128, 64, 32, 16, 8)],
        "round 1, ancestral 8",
        "round 2, ancestral 4",
    ]
    nfe = {label: float(r[1]) for label, r in zip(labels, rows)}
    assert nfe[labels[0]] == 1000 and nfe["round 2, ancestral 4"] <= 4 and nfe["teacher, ancestral 8"] <= 8
