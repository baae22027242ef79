"""simplex_decode.lab: tasks, the trunk + heads model, training objectives, checkpoints,
evaluation metrics."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode import lab
from simplex_decode.lab.evaluate import _majority_correct

# --------------------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True])
def test_addition_format_and_codes(reverse):
    task = lab.Addition(digits=3, reverse=reverse)
    ex = task.make(np.array([123, 999, 0]), np.array([45, 1, 0]))
    assert ex.prompts.tolist()[0] == [1, 2, 3, 10, 0, 4, 5, 11]
    want = [0, 1, 6, 8] if not reverse else [8, 6, 1, 0]
    assert ex.answers.tolist()[0] == want + [task.eos_id]
    assert ex.codes.tolist() == [168, 1000, 0]
    np.testing.assert_array_equal(task.answer_codes(ex.answers), ex.codes)
    bad = ex.answers.copy()
    bad[0, -1] = 3  # no EOS
    bad[1, 0] = task.plus_id  # not a digit
    assert task.answer_codes(bad).tolist() == [-1, -1, 0]


def test_splits_are_seeded_and_disjoint():
    task = lab.Addition(digits=2)
    test = task.test_set(300, seed=0)
    assert len(np.unique(test.keys)) == 300
    np.testing.assert_array_equal(test.prompts, task.test_set(300, seed=0).prompts)
    assert not np.array_equal(test.prompts, task.test_set(300, seed=1).prompts)
    train = task.train_set(5000, seed=0, exclude=test)
    assert len(train) == 5000 and not np.isin(train.keys, test.keys).any()
    with pytest.raises(ValueError, match="distinct"):
        lab.Addition(digits=1).test_set(101)


def test_path_star_structure():
    task = lab.PathStar(degree=3, path_len=4, num_nodes=30)
    ex = task.test_set(50, seed=3)
    assert ex.prompts.shape == (50, task.prompt_len) and ex.answers.shape == (50, task.answer_len)
    E = task.num_edges
    p = ex.prompts
    assert np.all(p[:, 2:3 * E - 1:3] == task.bar_id) and np.all(p[:, 3 * E - 1] == task.slash_id)
    assert np.all(p[:, -1] == task.equals_id)
    source, goal = p[:, 3 * E], p[:, 3 * E + 1]
    assert np.all(ex.answers[:, 0] == source) and np.all(ex.answers[:, task.path_len - 1] == goal)
    # every node label distinct within a graph; the source has `degree` neighbours, one on the path
    nodes = np.concatenate([p[:, : 3 * E - 1:3], p[:, 1: 3 * E - 1:3]], axis=1)
    assert all(len(set(r)) == 1 + E for r in nodes)
    nb = task.neighbours(p)
    assert nb.shape == (50, 3) and np.all(np.any(nb == ex.answers[:, 1:2], axis=1))
    np.testing.assert_array_equal(task.answer_codes(ex.answers), ex.codes)
    assert task.follows_edges(p, ex.answers).all()
    # a wrong arm is still a valid path; a jump is not
    wrong = ex.answers.copy()
    wrong[:, 2] = wrong[:, 3]
    assert not task.follows_edges(p, wrong).any()


def test_path_star_reversed_reads_the_same_path():
    fwd, rev = lab.PathStar(degree=2, path_len=5, num_nodes=20), lab.PathStar(degree=2, path_len=5, num_nodes=20,
                                                                              reverse=True)
    a, b = fwd.test_set(20, seed=1), rev.test_set(20, seed=1)
    np.testing.assert_array_equal(a.prompts, b.prompts)
    np.testing.assert_array_equal(b.answers[:, :5], a.answers[:, 4::-1])
    np.testing.assert_array_equal(rev.answer_codes(b.answers), a.codes)
    assert rev.follows_edges(b.prompts, b.answers).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(degree=0), "degree"), (dict(path_len=1), "path_len"), (dict(num_nodes=5), "num_nodes"),
    (dict(reverse=1), "reverse"),
])
def test_path_star_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lab.PathStar(**kwargs)


def test_addition_bad_arguments():
    with pytest.raises(ValueError, match="digits"):
        lab.Addition(digits=0)
    with pytest.raises(ValueError, match="in \\[0, 1000\\)"):
        lab.Addition(digits=3).make([1000], [1])


# --------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    cfg = lab.LabConfig(vocab_size=11, d_model=16, num_layers=1, num_heads=2, mtp_heads=3)
    return cfg, lab.init_params(cfg, jax.random.key(0))


def test_head_logits_are_causal_and_head0_is_the_step(tiny):
    cfg, params = tiny
    toks = jnp.array([[1, 2, 3, 4, 5, 6]], jnp.int32)
    lg = lab.head_logits(cfg, params, toks)
    assert lg.shape == (3, 1, 6, 11)
    changed = lab.head_logits(cfg, params, toks.at[0, 4].set(9))
    np.testing.assert_allclose(lg[:, :, :4], changed[:, :, :4], atol=1e-6)
    assert not np.allclose(lg[:, :, 4:], changed[:, :, 4:])
    # the cached step (trunk + head 0) gives head 0's logits
    step, cache = lab.make_step(cfg), lab.make_cache(cfg)(1, 8)
    out, cache = step(params, toks[:, :4], cache, jnp.arange(4)[None])
    out2, _ = step(params, toks[:, 4:], cache, jnp.arange(4, 6)[None])
    np.testing.assert_allclose(jnp.concatenate([out, out2], 1), lg[0], atol=2e-5)
    # the heads differ (independent parameters)
    assert not np.allclose(lg[0], lg[1])


def test_teacherless_step_ignores_answer_inputs(tiny):
    cfg, params = tiny
    step = lab.make_step(cfg, dummy_from=3, dummy_id=10)
    pos = jnp.arange(6)[None]
    a, _ = step(params, jnp.array([[1, 2, 3, 4, 5, 6]]), lab.make_cache(cfg)(1, 6), pos)
    b, _ = step(params, jnp.array([[1, 2, 3, 7, 8, 9]]), lab.make_cache(cfg)(1, 6), pos)
    np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="dummy_id"):
        lab.make_step(cfg, dummy_from=3, dummy_id=11)
    with pytest.raises(ValueError, match="both"):
        lab.make_step(cfg, dummy_from=3)


def test_config_and_params_validation(tiny):
    cfg, params = tiny
    with pytest.raises(ValueError, match="mtp_heads"):
        lab.LabConfig(vocab_size=4, mtp_heads=0)
    with pytest.raises(ValueError, match="d_model"):
        lab.LabConfig(vocab_size=4, d_model=10, num_heads=4)
    other = lab.LabConfig(vocab_size=11, d_model=16, num_layers=1, num_heads=2, mtp_heads=2)
    with pytest.raises(ValueError, match="params"):
        lab.check_params(other, params)


# --------------------------------------------------------------------------------------
# objectives and training
# --------------------------------------------------------------------------------------


def test_sequence_loss_reads_each_head_at_its_offset(tiny):
    cfg, params = tiny
    toks = jnp.array([[1, 2, 3, 4, 5, 6, 7]], jnp.int32)
    P = 3
    total, per_head = lab.sequence_loss(cfg, params, toks, prompt_len=P)
    lg = jax.nn.log_softmax(lab.head_logits(cfg, params, toks[:, :-1]), -1)
    for i in range(3):
        # head i at position t predicts token t+1+i; targets on the answer span t+1+i >= P
        ts = [t for t in range(6) if t + 1 + i < 7 and t + 1 + i >= P]
        want = -np.mean([lg[i, 0, t, int(toks[0, t + 1 + i])] for t in ts])
        np.testing.assert_allclose(per_head[i], want, rtol=1e-5)
    np.testing.assert_allclose(total, per_head.sum(), rtol=1e-6)


def test_teacherless_loss_feeds_dummies_on_the_answer_span():
    one = lab.LabConfig(vocab_size=11, d_model=16, num_layers=1, num_heads=2)
    p1 = lab.init_params(one, jax.random.key(1))
    toks = jnp.array([[1, 2, 3, 4, 5, 6, 7]], jnp.int32)
    total, _ = lab.sequence_loss(one, p1, toks, prompt_len=3, teacherless=True, dummy_id=10)
    inputs = jnp.array([[1, 2, 3, 10, 10, 10]], jnp.int32)  # answer inputs 4, 5, 6 -> dummy
    lg = jax.nn.log_softmax(lab.head_logits(one, p1, inputs)[0, 0], -1)
    want = -np.mean([lg[t, int(toks[0, t + 1])] for t in range(2, 6)])
    np.testing.assert_allclose(total, want, rtol=1e-5)
    # and it is not the teacher-forced loss
    assert abs(float(total) - float(lab.sequence_loss(one, p1, toks, prompt_len=3)[0])) > 1e-4


def test_training_learns_one_digit_addition():
    task = lab.Addition(digits=1, reverse=True)
    test = task.test_set(100, seed=0)  # every problem
    cfg = lab.LabConfig(vocab_size=task.vocab_size, d_model=32, num_layers=1, num_heads=2, d_ff=64)
    data = task.train_set(4000, seed=0)
    res = lab.train(cfg, data, steps=300, batch_size=64, learning_rate=1e-2, warmup=20, seed=0, log_every=150,
                    progress=False)
    assert res.steps == 300 and len(res.log) == 2 and res.log[1]["loss"] < res.log[0]["loss"]
    model = lab.Trained.for_task(cfg, res.params, task)
    acc = np.mean(lab.generate_codes(model, task, test) == test.codes)
    assert acc >= 0.9, acc


def test_train_stops_early_and_validates(tiny):
    task = lab.Addition(digits=1)
    cfg = lab.LabConfig(vocab_size=task.vocab_size, d_model=16, num_layers=1, num_heads=2)
    data = task.train_set(500, seed=0)
    res = lab.train(cfg, data, steps=40, batch_size=8, chunk=10, log_every=10, eval_fn=lambda p: {"accuracy": 1.0},
                    stop=lambda e: e["accuracy"] >= 1.0, progress=False)
    assert res.steps == 10
    with pytest.raises(ValueError, match="steps"):
        lab.train(cfg, data, steps=0)
    with pytest.raises(ValueError, match="dummy_id"):
        lab.train(cfg, data, steps=1, teacherless=True)
    with pytest.raises(ValueError, match="vocab_size"):
        lab.train(lab.LabConfig(vocab_size=5, d_model=16, num_layers=1, num_heads=2), data, steps=1)


def test_checkpoint_round_trip(tmp_path, tiny):
    cfg, params = tiny
    path = lab.save_checkpoint(tmp_path / "m.npz", cfg, params, meta={"note": "x"})
    cfg2, params2, meta = lab.load_checkpoint(path)
    assert cfg2 == cfg and meta == {"note": "x"}
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2), strict=True):
        np.testing.assert_array_equal(a, b)
    assert jax.tree.structure(params) == jax.tree.structure(params2)


# --------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------


def test_bootstrap_ci():
    v = np.r_[np.ones(60), np.zeros(40)]
    est = lab.bootstrap_ci(v, seed=0)
    assert est.mean == 0.6 and est.lo < 0.6 < est.hi
    # close to the normal interval 0.6 ± 1.96·sqrt(0.24/100)
    assert abs((est.hi - est.lo) - 2 * 1.96 * np.sqrt(0.24 / 100)) < 0.03
    assert lab.bootstrap_ci(np.ones(10)).lo == 1.0
    with pytest.raises(ValueError, match="values"):
        lab.bootstrap_ci(np.zeros((2, 2)))


def test_majority_rule_matches_majority_vote():
    rng = np.random.default_rng(0)
    draws = rng.integers(0, 4, (500, 8))
    for answer in range(4):
        ours = _majority_correct(draws, answer)
        ref = [sd.majority_vote(list(r))[0] == answer for r in draws]
        np.testing.assert_array_equal(ours, ref)


def test_first_token_metrics_against_enumeration():
    q = np.array([[0.5, 0.3, 0.2], [0.2, 0.45, 0.35]])
    answers = np.array([1, 1])
    m = lab.first_token_metrics(q, answers, k=3, replicates=20000, seed=0)
    np.testing.assert_allclose(m.single, [0.3, 0.45])
    np.testing.assert_allclose(m.pass_k, 1 - (1 - np.array([0.3, 0.45])) ** 3)
    exact = []
    for row in q:
        exact.append(sum(np.prod(row[list(s)]) for s in itertools.product(range(3), repeat=3)
                         if sd.majority_vote(list(s))[0] == 1))
    np.testing.assert_allclose(m.majority, exact, atol=4 * 0.5 / np.sqrt(20000))


def test_sample_metrics_counts_malformed_as_abstaining():
    m = lab.sample_metrics(np.array([[5, -1, -1, 2]]), np.array([5]))
    assert m.single.tolist() == [0.25] and m.majority.tolist() == [1.0] and m.pass_k.tolist() == [1.0]
    m = lab.sample_metrics(np.array([[5, 2, 2, 7]]), np.array([5]), k=2)
    np.testing.assert_allclose(m.pass_k, [1 - 3 / 6])
