"""The scheduling policy on hand-made snapshots: fair share, quotas, gang reservations and backfill,
preemption, and the forecast's positions, ETAs and reasons."""

from __future__ import annotations

from genq.jobs.policy import forecast, plan
from genq.jobs.pool import Node, Running, Snapshot, TeamState, Waiting, decay


def queue(team: str, n: int, start_id: int, **fields) -> list[Waiting]:
    return [Waiting(id=start_id + i, team=team, priority=0, created_at=float(start_id + i), **fields)
            for i in range(n)]


def teams(**weights: float) -> dict[str, TeamState]:
    return {name: TeamState(name, weight) for name, weight in weights.items()}


def test_decay_halves_per_half_life():
    assert decay(100.0, 24 * 3600, 24) == 50.0
    assert decay(100.0, 0, 24) == 100.0


def test_a_team_alone_takes_every_slot():
    snap = Snapshot(now=0, nodes=[Node("w", 4)], running=[], queue=queue("a", 10, 1), teams=teams(a=1, b=1))
    assert [job for job, _ in plan(snap).starts] == [1, 2, 3, 4]


def test_free_slots_go_to_the_team_below_its_share_before_the_older_burst():
    running = [Running(id=100 + i, team="a", node="w", expected_end=60.0) for i in range(2)]
    snap = Snapshot(now=0, nodes=[Node("w", 4)], running=running,
                    queue=queue("a", 12, 1) + queue("b", 12, 50), teams=teams(a=1, b=1))
    assert [job for job, _ in plan(snap).starts] == [50, 51], "b is below its share of 2: it gets both free slots"


def test_weights_split_the_slots_and_usage_breaks_ties():
    snap = Snapshot(now=0, nodes=[Node("w", 6)], running=[],
                    queue=queue("a", 10, 1) + queue("b", 10, 100), teams=teams(a=1, b=2))
    starts = [job for job, _ in plan(snap).starts]
    assert sum(j >= 100 for j in starts) == 4 and sum(j < 100 for j in starts) == 2
    used = {"a": TeamState("a", 1, usage=0.0), "b": TeamState("b", 1, usage=5000.0)}
    snap = Snapshot(now=0, nodes=[Node("w", 1)], running=[], queue=queue("b", 1, 1) + queue("a", 1, 2), teams=used)
    assert plan(snap).starts == [(2, "w")], "the team that used less goes first"


def test_a_whole_slot_owed_goes_before_a_fraction_of_one():
    # 7 slots, three equal teams: a share of 2.33 each. x runs 1 (owed a whole slot), y runs 2 (owed a third of
    # one) and has used less: the free slot is x's; y's fraction is settled by usage among the borrowers.
    running = [Running(id=100 + i, team=team, node="w", expected_end=600.0)
               for i, team in enumerate(["x", "y", "y", "z", "z", "z"])]
    used = {"x": TeamState("x", 1, usage=1000.0), "y": TeamState("y", 1), "z": TeamState("z", 1)}
    snap = Snapshot(now=0, nodes=[Node("w", 7)], running=running, queue=queue("y", 1, 1) + queue("x", 1, 2),
                    teams=used)
    assert plan(snap).starts == [(2, "w")]


def test_a_job_running_on_a_draining_host_holds_no_slot_of_the_others():
    # hosts v and v2, one slot each; v2 drains (its workers are not among the snapshot's nodes) while it runs 51
    running = [Running(id=51, team="a", node="v2", expected_end=600.0)]
    snap = Snapshot(now=0, nodes=[Node("v", 1)], running=running, queue=queue("b", 1, 52), teams=teams(a=1, b=1))
    assert plan(snap).starts == [(52, "v")]


def test_priority_then_age_within_a_team():
    jobs = queue("a", 3, 1) + [Waiting(id=9, team="a", priority=5, created_at=99.0)]
    snap = Snapshot(now=0, nodes=[Node("w", 2)], running=[], queue=jobs, teams=teams(a=1))
    assert [job for job, _ in plan(snap).starts] == [9, 1]


def test_device_quota_and_weekly_quota_hold_jobs_with_a_reason():
    capped = {"a": TeamState("a", max_gpus=2), "b": TeamState("b", gpu_hours_per_week=10, week_gpu_hours=10.5)}
    running = [Running(id=100, team="a", node="w")]
    snap = Snapshot(now=0, nodes=[Node("w", 8)], running=running, queue=queue("a", 5, 1) + queue("b", 3, 50),
                    teams=capped)
    decision = plan(snap)
    assert [job for job, _ in decision.starts] == [1]
    assert decision.reasons[2] == "team a is at its quota of 2 GPUs"
    assert "team b has used its 10 GPU-hours" in decision.reasons[50]


def test_a_team_whose_week_of_hours_is_spent_takes_no_share_from_the_others():
    # 3 slots, all a's; b (weight 1) waits, as does spent (weight 1, out of hours): b's share is 1 of 3, not 0.75
    spent = {**teams(a=2, b=1), "spent": TeamState("spent", gpu_hours_per_week=1, week_gpu_hours=2)}
    running = [Running(id=100 + i, team="a", node="w", started_at=0) for i in range(3)]
    snap = Snapshot(now=1000, nodes=[Node("w", 3)], running=running,
                    queue=queue("spent", 1, 1) + queue("b", 1, 2), teams=spent, min_run_seconds=0)
    decision = plan(snap)
    assert len(decision.preempt) == 1 and "GPU-hours" in decision.reasons[1]
    snap.teams["spent"] = TeamState("spent")  # with hours left it takes its share: b's is 0.75, no whole slot
    assert plan(snap).preempt == []


def test_a_big_job_reserves_a_worker_and_only_short_jobs_backfill_it():
    # Two 4-slot workers, each with 3 slots busy until t=100; a 4-GPU job first in line, then 1-GPU jobs.
    running = [Running(id=100 + i, team="b", node=f"w{i % 2}", expected_end=100.0) for i in range(6)]
    big = Waiting(id=1, team="a", priority=0, created_at=0.0, gpus=4, expected_seconds=500)
    short = Waiting(id=2, team="a", priority=0, created_at=1.0, expected_seconds=50)
    long = Waiting(id=3, team="b", priority=0, created_at=2.0, expected_seconds=1000)
    snap = Snapshot(now=0, nodes=[Node("w0", 4), Node("w1", 4)], running=running, queue=[big, short, long],
                    teams=teams(a=1, b=1, c=1), reserve_after_seconds=0)
    decision = plan(snap)
    node, when = decision.reserved[1]
    assert when == 100.0
    other = "w1" if node == "w0" else "w0"
    assert dict(decision.starts) == {2: node, 3: other}, "the short job backfills the reserved worker, the long not"
    assert "reserved for it" in decision.reasons[1]
    # One worker: the long job may not take its free slot (it would delay the big job); nothing starts.
    snap.queue, snap.nodes = [big, long], [Node("w0", 4)]
    snap.running = [r for r in running if r.node == "w0"]
    decision = plan(snap)
    assert decision.starts == [] and decision.reserved[1] == ("w0", 100.0)


def test_a_job_wider_than_every_worker_never_holds_the_queue():
    snap = Snapshot(now=0, nodes=[Node("w", 2)], running=[], teams=teams(a=1, b=1),
                    queue=[Waiting(id=1, team="a", priority=0, created_at=0, gpus=4)] + queue("b", 2, 10))
    decision = plan(snap)
    assert [job for job, _ in decision.starts] == [10, 11]
    assert decision.reasons[1] == "no worker in pool 'default' has 4 GPUs"
    # nor its own team's: until a host that wide joins, its narrower jobs run (and it keeps its place and reason)
    snap.queue = [*snap.queue, *queue("a", 1, 20)]
    decision = plan(snap)
    assert sorted(job for job, _ in decision.starts) == [10, 20]
    assert decision.reasons[1] == "no worker in pool 'default' has 4 GPUs"
    assert forecast(snap)[1].reason == "no worker in pool 'default' has 4 GPUs"
    snap.nodes = []  # no worker at all: nothing starts, and the team's first job says why
    assert plan(snap).starts == [] and plan(snap).reasons[1] == "no worker is online in pool 'default'"


def test_preemption_takes_back_a_share_losing_the_least_work_and_sparing_the_protected():
    running = [
        Running(id=100, team="a", node="w", started_at=0, at_risk_seconds=200),
        Running(id=101, team="a", node="w", started_at=0, at_risk_seconds=20),
        Running(id=102, team="a", node="w", started_at=0, at_risk_seconds=1, preemptible=False),
        Running(id=103, team="a", node="w", started_at=990, at_risk_seconds=0),  # ran 10 s: too soon
    ]
    snap = Snapshot(now=1000, nodes=[Node("w", 4)], running=running, queue=queue("b", 3, 1), teams=teams(a=1, b=1),
                    min_run_seconds=300)
    decision = plan(snap)
    assert decision.starts == [] and decision.preempt == [101, 100]
    snap.min_run_seconds = -1
    assert plan(snap).preempt == [], "a negative minimum run time never preempts"
    snap.min_run_seconds, snap.queue = 300, queue("a", 3, 1)
    assert plan(snap).preempt == [], "a team does not preempt itself at the same priority"
    snap.queue = [Waiting(id=1, team="a", priority=5, created_at=0)]
    assert plan(snap).preempt == [101], "a job of higher priority preempts its own team's"


def test_at_its_device_quota_a_team_swaps_its_own_job_for_one_of_higher_priority():
    # team a may run 1 device at once and runs job 100; b's job 101 runs too; one slot is free
    running = [Running(id=100, team="a", node="w", started_at=0, at_risk_seconds=5),
               Running(id=101, team="b", node="w", started_at=0, at_risk_seconds=1)]
    capped = {"a": TeamState("a", 1, max_gpus=1), "b": TeamState("b", 1)}
    snap = Snapshot(now=1000, nodes=[Node("w", 3)], running=running, teams=capped, min_run_seconds=300,
                    queue=[Waiting(id=1, team="a", priority=5, created_at=0)])
    decision = plan(snap)
    assert decision.starts == [] and decision.preempt == [100], "its own job, never b's, and no start over quota"
    snap.queue = [Waiting(id=1, team="a", priority=0, created_at=0)]
    assert plan(snap).preempt == [], "not for a job of the same priority"


def test_no_preemption_while_one_is_under_way_or_within_a_fair_share():
    running = [Running(id=100, team="a", node="w", at_risk_seconds=5, preempt_requested=True),
               Running(id=101, team="a", node="w", at_risk_seconds=5)]
    snap = Snapshot(now=1000, nodes=[Node("w", 2)], running=running, queue=queue("b", 2, 1), teams=teams(a=1, b=1))
    assert plan(snap).preempt == []
    one = Snapshot(now=1000, nodes=[Node("w", 1)], running=running[1:], queue=queue("b", 1, 1), teams=teams(a=1, b=1))
    assert plan(one).preempt == [], "one slot between two teams: taking it would only hand the deficit over"


def test_forecast_gives_positions_etas_and_reasons():
    running = [Running(id=100, team="a", node="w", expected_end=60.0)]
    jobs = queue("a", 2, 1, expected_seconds=30) + queue("b", 1, 10, expected_seconds=30)
    snap = Snapshot(now=0, nodes=[Node("w", 1)], running=running, queue=jobs, teams=teams(a=1, b=1))
    fc = forecast(snap)
    assert {j: (f.position, f.eta) for j, f in fc.items()} == {10: (0, 60.0), 1: (1, 90.0), 2: (2, 120.0)}
    assert "the 1 slot of pool 'default' is busy" in fc[10].reason
    assert fc[2].reason.startswith("behind 2 jobs")
    capped = Snapshot(now=0, nodes=[Node("w", 1)], running=[], queue=queue("a", 1, 1),
                      teams={"a": TeamState("a", gpu_hours_per_week=1, week_gpu_hours=2)})
    assert forecast(capped)[1].eta is None
    empty = Snapshot(now=0, nodes=[], running=[], queue=queue("a", 1, 1), teams=teams(a=1))
    assert forecast(empty)[1].reason == "no worker is online in pool 'default'"


def test_every_job_a_quota_holds_back_gives_the_quota_as_its_reason():
    # 3 slots, 2 idle; team a may hold 1 device and runs 1: its 3 queued jobs all wait for the quota
    snap = Snapshot(now=0, nodes=[Node("w", 3)], running=[Running(id=100, team="a", node="w", expected_end=60.0)],
                    queue=queue("a", 3, 1, expected_seconds=30), teams={"a": TeamState("a", max_gpus=1)})
    fc = forecast(snap)
    assert [fc[j].reason for j in (1, 2, 3)] == ["team a is at its quota of 1 GPU"] * 3
    assert [fc[j].eta for j in (1, 2, 3)] == [60.0, 90.0, 120.0]


def test_a_wide_job_reserves_only_after_waiting_a_while():
    running = [Running(id=100 + i, team="b", node="w", expected_end=100.0) for i in range(3)]
    big = Waiting(id=1, team="a", priority=0, created_at=0.0, gpus=4, expected_seconds=500)
    snap = Snapshot(now=60, nodes=[Node("w", 4)], running=running, queue=[big], teams=teams(a=1, b=1),
                    reserve_after_seconds=600)
    assert plan(snap).reserved == {}, "a minute in, it may still find room by itself"
    snap.now = 700  # the running jobs are overdue: expected to end any moment now
    assert plan(snap).reserved == {1: ("w", 700.0)}


def test_a_reserved_worker_stays_kept_once_free_and_a_team_backfills_with_its_shorter_jobs():
    # w0 has just emptied for team a's 4-GPU job, which has waited an hour: team b's job, first in fair-share
    # order (a is over its share), takes w1's free slot, not the room kept on w0.
    big = Waiting(id=1, team="a", priority=0, created_at=0.0, gpus=4, expected_seconds=500)
    other = Waiting(id=2, team="b", priority=0, created_at=1.0, expected_seconds=50)
    busy = [Running(id=100 + i, team="a", node="w1", expected_end=7200.0) for i in range(3)]
    over = {"a": TeamState("a", 1.0, usage=1e6), "b": TeamState("b", 1.0)}
    snap = Snapshot(now=3600, nodes=[Node("w0", 4), Node("w1", 4)], running=busy, queue=[big, other], teams=over)
    decision = plan(snap)
    assert sorted(decision.starts) == [(1, "w0"), (2, "w1")]
    assert decision.reserved == {}, "a job that starts holds no reservation"
    # One worker, kept for the big job until t=7200: team b's long job would delay it and steps aside for b's
    # short one, which ends in time.
    long = Waiting(id=3, team="b", priority=0, created_at=0.5, expected_seconds=9000)
    snap.nodes = [Node("w0", 4)]
    snap.running = [Running(id=100 + i, team="a", node="w0", expected_end=7200.0) for i in range(3)]
    snap.queue = [big, long, other]
    decision = plan(snap)
    assert decision.reserved == {1: ("w0", 7200.0)} and decision.starts == [(2, "w0")]


def test_a_starving_wide_job_reserves_before_a_team_first_in_fair_share_order():
    running = [Running(id=100 + i, team="c", node="w", expected_end=5e4) for i in range(3)]
    mine = Waiting(id=1, team="a", priority=0, created_at=0.0, gpus=4, expected_seconds=500)
    theirs = Waiting(id=2, team="b", priority=0, created_at=10.0, gpus=4, expected_seconds=500)
    over = {"a": TeamState("a", 1.0, usage=1e6), "b": TeamState("b", 1.0), "c": TeamState("c", 1.0)}
    snap = Snapshot(now=3600, nodes=[Node("w", 4)], running=running, queue=[mine, theirs], teams=over)
    assert list(plan(snap).reserved) == [2], "an hour in: team b, below team a in usage, reserves"
    snap.now = 13 * 3600
    assert list(plan(snap).reserved) == [1], "after 12 h the oldest reserves whatever its team's usage"
    # The same, but team a already runs more than its share (4 of 8 slots, share 8/3): its starving job does
    # not jump the order, or it would keep the worker from the teams below their share.
    snap.nodes = [Node("w", 4), Node("w2", 4)]
    snap.running = running + [Running(id=200 + i, team="a", node="w2", expected_end=5e4) for i in range(4)]
    assert list(plan(snap).reserved) == [2], "after 12 h, a team over its share waits its fair-share turn"


def test_a_job_wider_than_its_teams_max_gpus_waits_aside_and_holds_back_no_job():
    # pool 'two' (one host of 2 slots); alpha's max_gpus was lowered to 1 after it queued job 29 of 2 devices
    capped = {"alpha": TeamState("alpha", max_gpus=1), "beta": TeamState("beta")}
    wide = Waiting(id=29, team="alpha", priority=0, created_at=0, gpus=2)
    snap = Snapshot(now=0, nodes=[Node("h", 2)], running=[], queue=[wide, *queue("alpha", 1, 30)], teams=capped,
                    pool="two")
    decision = plan(snap)
    assert decision.starts == [(30, "h")], "its team's narrower job starts"
    never = ("needs 2 GPUs, more than team alpha may hold at once (max_gpus 1): it can never start under this "
             "quota; raise max_gpus or cancel it")
    assert decision.reasons[29] == never and decision.reserved == {}
    fc = forecast(snap)
    assert (fc[30].position, fc[30].eta) == (0, 0) and (fc[29].position, fc[29].eta, fc[29].reason) == (1, None, never)
    # behind the team's other jobs too, it says so rather than "behind N jobs"
    snap.queue = [*queue("alpha", 3, 1), Waiting(id=29, team="alpha", priority=0, created_at=9, gpus=2)]
    assert forecast(snap)[29].reason == never
    # it counts for no share: beta, alone wanting slots besides it, may take back a slot from gamma
    running = [Running(id=100 + i, team="gamma", node="h", started_at=0) for i in range(2)]
    snap = Snapshot(now=1000, nodes=[Node("h", 2)], running=running, queue=[wide, *queue("beta", 1, 40)],
                    teams={**capped, "gamma": TeamState("gamma")}, pool="two")
    assert plan(snap).preempt == [100]
    snap.teams = {**snap.teams, "alpha": TeamState("alpha", max_gpus=2)}
    assert plan(snap).preempt == [], "raised again, it counts: three teams of a share of 2/3 each"


def test_a_pool_whose_hosts_drain_says_so():
    drained = Snapshot(now=0, nodes=[], running=[], queue=queue("a", 1, 1), teams=teams(a=1), draining=[Node("vm", 1)])
    why = ("the workers of pool 'default' are on draining hosts (vm): it starts once one is undrained or another "
           "worker joins")
    assert plan(drained).reasons[1] == why and forecast(drained)[1].reason == why
    wide = Snapshot(now=0, nodes=[Node("w", 2)], running=[], teams=teams(a=1), draining=[Node("v1", 1), Node("v4", 4)],
                    queue=[Waiting(id=1, team="a", priority=0, created_at=0, gpus=4)])
    assert plan(wide).reasons[1].startswith("the workers of pool 'default' with 4 GPUs are on draining hosts (v4)")
    wide.draining = [Node("v1", 1)]
    assert plan(wide).reasons[1] == "no worker in pool 'default' has 4 GPUs"


def test_jobs_waiting_for_a_job_past_its_expected_end_have_no_eta_and_no_free_slot():
    # two slots, both held by jobs that should have ended by now: when they will is anyone's guess
    running = [Running(id=100 + i, team="a", node="w", expected_end=60.0) for i in range(2)]
    snap = Snapshot(now=100, nodes=[Node("w", 2)], running=running, queue=queue("b", 3, 1, expected_seconds=30),
                    teams=teams(a=1, b=1))
    fc = forecast(snap)
    assert [fc[j].eta for j in (1, 2)] == [None, None]
    assert "busy" in fc[1].reason and fc[2].reason.startswith("behind 1 job")
    assert not any("a slot is free" in f.reason for f in fc.values())
    assert fc[3].eta == 130.0  # after 1 or 2, which start "now" in the play of the queue
    free = Snapshot(now=100, nodes=[Node("w", 3)], running=running, queue=queue("b", 2, 1, expected_seconds=30),
                    teams=teams(a=1, b=1))
    assert (forecast(free)[1].eta, forecast(free)[1].reason) == (100, "a slot is free: it starts at this scheduling "
                                                                      "round")
    assert forecast(free)[2].eta is None
