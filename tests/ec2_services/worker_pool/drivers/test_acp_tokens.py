"""The model tokens an ACP agent reports on its prompt responses, summed per turn: ACP's own ``usage`` or Gemini
CLI's ``_meta.quota.token_count``; nothing when the agent reports neither (claude-code-acp, Kiro)."""

from ec2_services.worker_pool.drivers.acp import _add_tokens, _Turn


def turn_after(*responses: dict) -> _Turn:
    turn = _Turn(answer=None)
    for response in responses:
        _add_tokens(turn, response)
    return turn


def test_acp_usage_and_gemini_quota_are_both_read_and_summed_over_a_turns_attempts():
    acp = {"stopReason": "end_turn", "usage": {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10}}
    gemini = {"stopReason": "end_turn", "_meta": {"quota": {"token_count": {"input_tokens": 50, "output_tokens": 100},
                                                            "model_usage": []}}}
    assert turn_after(acp).tokens == {"input": 7, "output": 3}
    assert turn_after(gemini, acp).tokens == {"input": 57, "output": 103}


def test_a_response_without_usage_reports_no_tokens():
    assert turn_after({"stopReason": "end_turn"}, {"stopReason": "end_turn", "_meta": {"quota": "n/a"}}).tokens is None
