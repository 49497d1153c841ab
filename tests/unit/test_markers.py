"""Severity markers in subjects: real-looking subjects, reply prefixes, header hints."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.markers import (
    Found,
    MarkerStatus,
    Vocabulary,
    header_hint,
    read_severity,
    strip_reply_prefixes,
)
from gateway.policy.model import Clock, Level, Policy, Span

# The three policies' own level names: "Critical" is 1 for LumenVox, 2 for Vmoso.
LUMENVOX = Vocabulary.from_names({1: ["Critical"], 2: ["Major"], 3: ["Minor"], 4: ["Other"]})
VMOSO = Vocabulary.from_names(
    {1: ["Emergency"], 2: ["Critical"], 3: ["Normal"], 4: ["Enhancement Request"]}
)
PARALLELS = Vocabulary.from_names(
    {1: ["Urgent", "Outage"], 2: ["High"], 3: ["Normal"], 4: ["Enhancement"]}
)

MISSING, CLEAR, CONTRA = MarkerStatus.MISSING, MarkerStatus.CLEAR, MarkerStatus.CONTRADICTORY


def case(subject: str, status: MarkerStatus, level: int | None, vocabulary: Vocabulary = LUMENVOX,
         *, id: str) -> object:
    return pytest.param(subject, vocabulary, status, level, id=id)


SUBJECTS = [
    # Numbered markers, every spelling customers use.
    case("[P1] Production database down", CLEAR, 1, id="bracket-p1"),
    case("P1: Production database down", CLEAR, 1, id="p1-colon"),
    case("P2 - Reports are slow", CLEAR, 2, id="p2-dash"),
    case("(P3) Typo on the invoice page", CLEAR, 3, id="paren-p3"),
    case("Login fails for all users P1", CLEAR, 1, id="p1-standalone-word-at-end"),
    case("Upgrade is P-2 for us", CLEAR, 2, id="p-hyphen-2"),
    case("Prio 1 payment gateway", CLEAR, 1, id="prio-1"),
    case("Pri-2 search index stale", CLEAR, 2, id="pri-hyphen-2"),
    case("Priority 1 outage in EU region", CLEAR, 1, id="priority-1"),
    case("Priority: 2 cannot export PDF", CLEAR, 2, id="priority-colon-2"),
    case("Priority-3 question about licences", CLEAR, 3, id="priority-hyphen-3"),
    case("Priority #1: checkout broken", CLEAR, 1, id="priority-hash-1"),
    case("Sev 1 all queues stuck", CLEAR, 1, id="sev-space-1"),
    case("Sev1 all queues stuck", CLEAR, 1, id="sev1"),
    case("Sev-2 mail delayed", CLEAR, 2, id="sev-hyphen-2"),
    case("Sev: 3 wrong label colour", CLEAR, 3, id="sev-colon-3"),
    case("Severity 4 feature idea", CLEAR, 4, id="severity-4"),
    case("Severity: 2 - SSO intermittent", CLEAR, 2, id="severity-colon-2"),
    case("Severity Level 1 cluster unreachable", CLEAR, 1, id="severity-level-1"),
    case("Priority Level 2: backups late", CLEAR, 2, id="priority-level-2"),
    case("[S1] Site down", CLEAR, 1, id="bracket-s1"),
    case("S2: API returns 502", CLEAR, 2, id="s2-at-head-with-colon"),
    case("Level 1 - total outage", CLEAR, 1, id="level-1-at-head-with-dash"),
    case("(Level 2) slow dashboards", CLEAR, 2, id="paren-level-2"),
    case("Priority 1 – Emergency: db cluster down", CLEAR, 1, VMOSO, id="number-and-own-name"),
    case("P1 (Urgent) VPN down", CLEAR, 1, PARALLELS, id="number-and-paren-name"),
    case("P1 High CPU on all nodes", CLEAR, 1, PARALLELS, id="number-then-other-level-word"),
    # Case and unicode.
    case("[p2] reports are slow", CLEAR, 2, id="lowercase-bracket"),
    case("sEv 3 wrong colour", CLEAR, 3, id="mixed-case-sev"),
    case("PRIORITY 1 OUTAGE", CLEAR, 1, id="uppercase-priority"),
    case("回复：紧急P1 服务器宕机", CLEAR, 1, id="p1-glued-to-chinese"),
    case("P1紧急 服务器宕机", CLEAR, 1, id="chinese-glued-to-p1"),
    case("P1ด่วน ระบบล่ม", CLEAR, 1, id="thai-glued-to-p1"),
    case("ด่วนP2 เว็บช้า", CLEAR, 2, id="p2-glued-to-thai"),
    case("Störung im Rechenzentrum [P1]", CLEAR, 1, id="german-with-bracket"),
    case("Ошибка входа — Sev 2", CLEAR, 2, id="cyrillic-with-sev"),
    case("", MISSING, None, id="empty"),
    case("   ", MISSING, None, id="blank"),
    # Reply and forward chains.
    case("Re: [P1] Production database down", CLEAR, 1, id="re"),
    case("RE: RE: Fwd: P2 - reports slow", CLEAR, 2, id="re-re-fwd"),
    case("AW: WG: Sev 1 Ausfall", CLEAR, 1, id="aw-wg"),
    case("SV: VS: Critical: betalningar stoppade", CLEAR, 1, id="sv-vs-head-name"),
    case("回复：答复：Critical：数据库宕机", CLEAR, 1, id="chinese-prefixes-fullwidth-colon"),
    case("Re[2]: Minor: typo in footer", CLEAR, 3, id="re-counter-head-name"),
    case("Fwd: [HD-000123] Re: Major - sync broken", CLEAR, 2, id="tag-then-re-then-name"),
    # Case tags are never markers.
    case("[HD-000123] Printer offline", MISSING, None, id="case-tag-only"),
    case("Re: [HD-000004] Disk 3 of 4 failed", MISSING, None, id="case-tag-small-number"),
    case("Re: [HD-000123] [P2] still slow", CLEAR, 2, id="case-tag-and-marker"),
    case("[HD-000001] Sev 1", CLEAR, 1, id="case-tag-number-1-and-sev-1"),
    # Repeated and contradictory markers.
    case("[P1] P1: db down", CLEAR, 1, id="same-level-twice"),
    case("[P1] Sev 3 login slow", CONTRA, 1, id="p1-and-sev3"),
    case("P4 or P2? export fails", CONTRA, 2, id="p4-and-p2"),
    case("[Minor] Priority 1 outage", CONTRA, 1, id="name-and-number"),
    case("[P3] URGENT: server down", CONTRA, 1, PARALLELS, id="bracket-then-head-name"),
    # Level names and words, only in marker positions.
    case("[Critical] Payment API down", CLEAR, 1, LUMENVOX, id="lumenvox-critical-is-1"),
    case("[Critical] Payment API down", CLEAR, 2, VMOSO, id="vmoso-critical-is-2"),
    case("Critical: db down", CLEAR, 1, LUMENVOX, id="head-name-colon"),
    case("Critical: db down", CLEAR, 2, VMOSO, id="head-name-colon-vmoso"),
    case("(URGENT) cannot log in", CLEAR, 1, PARALLELS, id="paren-urgent"),
    case("URGENT - server down", CLEAR, 1, PARALLELS, id="head-name-dash"),
    case("URGENT!!! server down", CLEAR, 1, PARALLELS, id="head-name-bang"),
    case("High Priority: VPN flaps", CLEAR, 2, PARALLELS, id="head-name-with-keyword"),
    case("[High Priority] VPN flaps", CLEAR, 2, PARALLELS, id="bracket-name-with-keyword"),
    case("Severity: Critical - backups failing", CLEAR, 2, VMOSO, id="severity-colon-name"),
    case("Priority High: mail queue growing", CLEAR, 2, PARALLELS, id="priority-name"),
    case("Sev Major sync issue", CLEAR, 2, LUMENVOX, id="sev-name"),
    case("[Enhancement Request] dark mode", CLEAR, 4, VMOSO, id="multi-word-name"),
    case("enhancement   request: export to CSV", CLEAR, 4, VMOSO, id="multi-word-name-spaces"),
    case("[EXTERNAL] Outage: all sites", CLEAR, 1, PARALLELS, id="external-tag-then-word"),
    case("【Urgent】服务器宕机", CLEAR, 1, PARALLELS, id="cjk-brackets"),
    case("Critical bug in login page", MISSING, None, LUMENVOX, id="name-as-plain-adjective"),
    case("Urgent question about invoices", MISSING, None, PARALLELS, id="word-as-plain-text"),
    case("Critical-path analysis export", MISSING, None, LUMENVOX, id="name-hyphenated-word"),
    case("Report shows Major: 3 errors", MISSING, None, LUMENVOX, id="name-colon-not-at-head"),
    case("Other users cannot log in", MISSING, None, LUMENVOX, id="other-as-plain-word"),
    case("High CPU on node 4", MISSING, None, PARALLELS, id="high-as-plain-word"),
    case("Priority Higher than expected", MISSING, None, PARALLELS, id="name-prefix-of-word"),
    # Numbers that are not markers.
    case("Windows 10 login loop", MISSING, None, id="windows-10"),
    case("HTTP 500 on checkout", MISSING, None, id="http-500"),
    case("Level 10 logging fills disk", MISSING, None, id="level-10"),
    case("P100 sensor offline", MISSING, None, id="p100"),
    case("PS4 controller not detected", MISSING, None, id="ps4"),
    case("MP3 upload rejected", MISSING, None, id="mp3"),
    case("S3 bucket not accessible", MISSING, None, id="s3-bucket-at-start"),
    case("Cannot read from S1 bucket", MISSING, None, id="s1-mid-subject"),
    case("level 3 cache misses after upgrade", MISSING, None, id="level-3-cache"),
    case("Escalated to level 2 support", MISSING, None, id="level-2-support"),
    case("Level 2 support: no answer", MISSING, None, id="level-2-support-at-head"),
    case("Upgrade to v1.2 failed", MISSING, None, id="version-v1.2"),
    case("Release 2.1 notes missing", MISSING, None, id="version-2.1"),
    case("P1.2 firmware bricks device", MISSING, None, id="p-version"),
    case("Host 10.1.2.3 unreachable", MISSING, None, id="ip-address"),
    case("Outage on 2024-01-02 and 1/3", MISSING, None, id="dates"),
    case("RFC 2822 date header rejected", MISSING, None, id="rfc-2822"),
    case("Error 1 when saving", MISSING, None, id="error-1"),
    case("Cannot bind port 1", MISSING, None, id="port-1"),
    case("P5 low importance", MISSING, None, id="p5-out-of-range"),
    case("Sev 0 everything fine", MISSING, None, id="sev-0"),
    case("Priority 10 queue", MISSING, None, id="priority-10"),
    case("Mail to p1@example.com bounces", MISSING, None, id="p1-in-address"),
    case("Open https://host/p2/index", MISSING, None, id="p2-in-path"),
    case("Sev 1:30 meeting", MISSING, None, id="number-then-time"),
    case("Pentium 4 box reboots", MISSING, None, id="pentium-4"),
    case("P2V migration fails", MISSING, None, id="p2v"),
    case("p2p network slow", MISSING, None, id="p2p"),
    case("P3P header ignored", MISSING, None, id="p3p"),
    case("P4V client crashes", MISSING, None, id="p4v"),
    case("P1x board offline", MISSING, None, id="p1-then-letter"),
    case("P1_db replication lag", MISSING, None, id="p1-then-underscore"),
    case("Sev 1a runbook typo", MISSING, None, id="sev-1-then-letter"),
    case("Sev1b runbook typo", MISSING, None, id="sev1-then-letter"),
    case("Priority 2nd opinion", MISSING, None, id="priority-ordinal"),
    case("[P1x] board offline", MISSING, None, id="bracket-p1-then-letter"),
    case("S1x: board offline", MISSING, None, id="s1-then-letter-at-head"),
    case("Level 2b - slow", MISSING, None, id="level-2-then-letter-at-head"),
]


@pytest.mark.parametrize(("subject", "vocabulary", "status", "level"), SUBJECTS)
def test_subjects(subject, vocabulary, status, level):
    # When the severity of a subject is read
    result = read_severity(subject, vocabulary)
    # Then it is what the customer asked for, and every marker is where it says
    assert (result.status, result.level) == (status, level)
    assert (result.found == ()) == (status is MISSING)
    for found in result.found:
        assert subject[found.start :].startswith(found.text)


def test_the_table_is_large():
    assert len(SUBJECTS) >= 80


@pytest.mark.parametrize(
    ("subject", "vocabulary", "found"),
    [
        pytest.param("Re: [P1] down", LUMENVOX, (Found("[P1]", 1, 4),), id="bracket"),
        pytest.param("x Sev 2 y", LUMENVOX, (Found("Sev 2", 2, 2),), id="keyword"),
        pytest.param("Re: Critical: db", LUMENVOX, (Found("Critical:", 1, 4),), id="head-name"),
        pytest.param("Priority 1 – Emergency", VMOSO,
                     (Found("Priority 1 – Emergency", 1, 0),), id="one-marker-with-name"),
        pytest.param("Priority 3 – Emergency", VMOSO, (Found("Priority 3", 3, 0),),
                     id="number-wins-over-another-name"),
        pytest.param("[P1] Sev 3", LUMENVOX, (Found("[P1]", 1, 0), Found("Sev 3", 3, 5)),
                     id="two-in-order"),
        pytest.param("[P2 - Major]", LUMENVOX, (Found("[P2 - Major]", 2, 0),),
                     id="whole-bracket"),
    ],
)
def test_found_markers_are_reported_as_written(subject, vocabulary, found):
    assert read_severity(subject, vocabulary).found == found


# --- vocabularies ---------------------------------------------------------------


def level(number: int, name: str, *words: str) -> Level:
    return Level(
        number=number, name=name, description="", words=words,
        initial_response=Span(timedelta(hours=number), Clock.WALL),
    )


def test_vocabulary_from_policy_uses_level_names_and_words():
    # Given a policy whose level 1 is "Urgent" and whose customers also say "emergency"
    policy = Policy(
        name="parallels", title="Parallels Support", calendar=None,  # type: ignore[arg-type]
        levels={1: level(1, "Urgent", "emergency", "outage"), 2: level(2, "High"),
                3: level(3, "Normal"), 4: level(4, "Enhancement")},
        default_level=3,
    )
    vocabulary = Vocabulary.from_policy(policy)
    # Then names and words are both markers, in marker positions
    assert read_severity("EMERGENCY: site down", vocabulary).level == 1
    assert read_severity("[High] slow", vocabulary).level == 2
    assert read_severity("Severity: enhancement", vocabulary).level == 4
    assert vocabulary == Vocabulary.from_names(
        {1: ["Urgent", "emergency", "outage"], 2: ["High"], 3: ["Normal"], 4: ["Enhancement"]}
    )


def test_a_word_for_two_levels_is_refused():
    with pytest.raises(ValueError, match="'critical' names both level 1 and level 2"):
        Vocabulary.from_names({1: ["Critical"], 2: ["critical"]})


def test_a_level_outside_one_to_four_is_refused():
    with pytest.raises(ValueError, match="level 5 is not one of 1, 2, 3, 4"):
        Vocabulary.from_names({5: ["Someday"]})


def test_longer_names_win_over_their_prefixes():
    vocabulary = Vocabulary.from_names({3: ["Enhancement"], 4: ["Enhancement Request"]})
    assert read_severity("[Enhancement Request] x", vocabulary).level == 4
    assert read_severity("[Enhancement] x", vocabulary).level == 3


def test_an_empty_vocabulary_still_reads_numbers():
    vocabulary = Vocabulary.from_names({})
    assert read_severity("[Critical] P2 x", vocabulary).level == 2
    assert read_severity("Critical: x", vocabulary).status is MISSING


# --- reply prefixes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "stripped"),
    [
        ("Re: hello", "hello"),
        ("RE: RE: Fwd: hello", "hello"),
        ("re:hello", "hello"),
        ("Re : bonjour", "bonjour"),
        ("TR: RE : bonjour", "bonjour"),
        ("Re[2]: hello", "hello"),
        ("Re(3): hello", "hello"),
        ("AW: WG: Hallo", "Hallo"),
        ("SV: VS: Hej", "Hej"),
        ("Antw: Odp: Ynt: RIF: R: x", "x"),
        ("FW: Fwd: RV: ENC: x", "x"),
        ("回复：答复:轉寄： 你好", "你好"),
        ("  Re:   spaced  ", "spaced  "),
        ("Re: [HD-000123] Re: hello", "[HD-000123] Re: hello"),
        ("Reason: disk full", "Reason: disk full"),
        ("Rework needed", "Rework needed"),
        ("Fwdx: y", "Fwdx: y"),
        ("hello Re: world", "hello Re: world"),
        ("Re:", ""),
        ("", ""),
    ],
)
def test_strip_reply_prefixes(subject, stripped):
    assert strip_reply_prefixes(subject) == stripped


# --- header hints ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "hint"),
    [
        ({}, None),
        ({"x-priority": "1 (Highest)"}, 2),
        ({"x-priority": "2 (High)"}, 2),
        ({"x-priority": "3 (Normal)"}, None),
        ({"x-priority": "4 (Low)"}, 4),
        ({"x-priority": "5"}, 4),
        ({"x-priority": "15"}, None),
        ({"importance": "high"}, 2),
        ({"importance": "High"}, 2),
        ({"importance": "normal"}, None),
        ({"importance": "low"}, 4),
        ({"priority": "urgent"}, 2),
        ({"priority": "non-urgent"}, 4),
        ({"priority": "normal"}, None),
        ({"x-msmail-priority": "High"}, 2),
        ({"x-priority": "1 (Highest)", "importance": "high", "x-msmail-priority": "High"}, 2),
        ({"importance": "high", "x-priority": "5 (Lowest)"}, None),
        ({"Importance": "HIGH"}, 2),
        ({"importance": "", "x-priority": "garbage"}, None),
        ({"subject": "URGENT", "precedence": "bulk"}, None),
    ],
)
def test_header_hint(headers, hint):
    assert header_hint(headers) == hint


def test_the_hint_is_reported_but_never_the_level():
    # Given a subject without a marker from a client flagging the mail important
    result = read_severity("Question about invoices", LUMENVOX, {"importance": "high"})
    # Then no level is read from the flag; it is only a hint
    assert (result.status, result.level, result.hint) == (MISSING, None, 2)
    # And an explicit marker wins over the flag
    flagged = read_severity("[P4] Question", LUMENVOX, {"x-priority": "1 (Highest)"})
    assert (flagged.status, flagged.level, flagged.hint) == (CLEAR, 4, 2)


# --- properties -----------------------------------------------------------------

FRAGMENTS = [
    "[", "]", "(", ")", "P", "p", "S", "1", "2", "3", "4", "5", "0", " ", ":", "-", "–", ".",
    "/", "@", "#", "Sev", "Priority", "Level", "Critical", "Major", "Emergency", "Re: ",
    "[HD-000123]", "回复：", "紧急", "!", "Enhancement Request",
]
subjects = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)), max_size=14).map(
        "".join
    ),
)
prefixes = st.lists(
    st.sampled_from(["Re: ", "RE:", "Fwd: ", "AW: ", "WG: ", "SV: ", "Re[2]: ", "回复：", "TR : "]),
    max_size=4,
).map("".join)


@given(subject=subjects, headers=st.dictionaries(st.sampled_from(
    ["x-priority", "importance", "priority", "x-msmail-priority"]), st.text(max_size=12)))
@example(subject="[P1] Sev 3 [Critical]", headers={})
def test_read_severity_never_raises_and_is_consistent(subject, headers):
    for vocabulary in (LUMENVOX, VMOSO, PARALLELS):
        result = read_severity(subject, vocabulary, headers)
        levels = {found.level for found in result.found}
        assert all(1 <= found_level <= 4 for found_level in levels)
        assert [f.start for f in result.found] == sorted(f.start for f in result.found)
        for found in result.found:
            assert subject[found.start :].startswith(found.text)
        if not levels:
            assert (result.status, result.level) == (MISSING, None)
        elif len(levels) == 1:
            assert (result.status, result.level) == (CLEAR, min(levels))
        else:
            assert (result.status, result.level) == (CONTRA, min(levels))
        assert result.hint in (None, 2, 4)


@given(subject=subjects, prefix=prefixes)
@example(subject="Critical: db down", prefix="Re: AW: ")
def test_reply_prefixes_change_nothing(subject, prefix):
    def reading(text: str) -> tuple[object, ...]:
        result = read_severity(text, LUMENVOX)
        return result.status, result.level, tuple((f.text, f.level) for f in result.found)

    assert reading(prefix + subject) == reading(subject)
    assert strip_reply_prefixes(prefix + subject) == strip_reply_prefixes(subject)


@given(subject=subjects)
@example(subject="Critical bug in login page")
def test_a_bracketed_marker_in_front_of_a_marker_free_subject_is_clear(subject):
    if read_severity(subject, VMOSO).status is not MISSING:
        return
    result = read_severity("[P2] " + subject, VMOSO)
    assert (result.status, result.level) == (CLEAR, 2)
    assert result.found == (Found("[P2]", 2, 0),)
