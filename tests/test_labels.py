import pytest

from adaptivestep.label.rules import (
    early_stop_waves,
    first_error_search,
    hard_label,
    run_first_error_search,
    soft_label,
)


def test_hard_and_soft():
    assert hard_label([0, 0, 0]) == 0.0
    assert hard_label([0, 1, 0]) == 1.0
    assert soft_label([1, 0, 0, 0]) == 0.25
    assert isinstance(soft_label([1, 1]), float)
    with pytest.raises(ValueError):
        hard_label([])


def test_waves_cover_all_indices_once():
    for m in range(1, 12):
        for w in range(1, 6):
            flat = [i for wave in early_stop_waves(m, w) for i in wave]
            assert flat == list(range(m))


def _drive(gen):
    """Run a plan whose probes never yield to its end; its return value."""
    try:
        next(gen)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the search yielded although its probes do not")


@pytest.mark.parametrize("n", range(1, 12))
def test_first_error_search_finds_first_zero_on_monotone_labels(n):
    for first in range(n):  # last step always bad (final answer wrong)
        truth = [1.0 if k < first else 0.0 for k in range(n)]
        probes = []

        def probe(k):
            probes.append(k)
            return truth[k]
            yield  # a generator that needs no rollouts

        labels, probed = _drive(run_first_error_search(n, 0.0, probe))
        assert labels == truth
        assert probed == probes
        assert len(probed) <= max(1, (n - 1).bit_length())
        assert n - 1 not in probed  # the final step is never rolled out


def test_first_error_search_correct_final_needs_no_probe():
    labels, probed = _drive(run_first_error_search(6, 1.0, lambda k: pytest.fail("probed")))
    assert labels == [1.0] * 6 and probed == []


def test_first_error_search_generator_protocol():
    g = first_error_search(3, 0.0)
    assert next(g) == 1
    assert g.send(0.0) == 0  # step 1 bad -> look left
    with pytest.raises(StopIteration) as stop:
        g.send(1.0)  # step 0 good -> first error is step 1
    assert stop.value.value == [1.0, 0.0, 0.0]


def test_first_error_search_passes_probe_requests_through():
    """Inside a labelling plan: what a probe yields reaches the driver, and what the driver sends comes back."""
    asked = []

    def probe(k):
        outcomes = yield ("rollouts for", k)
        return 1.0 if any(outcomes) else 0.0

    g = run_first_error_search(8, 0.0, probe)
    req = next(g)
    truth_first_error = 5
    try:
        while True:
            asked.append(req[1])
            req = g.send([1] if req[1] < truth_first_error else [0])
    except StopIteration as stop:
        labels, probed = stop.value
    assert labels == [1.0] * 5 + [0.0] * 3
    assert probed == asked and len(asked) == 3
