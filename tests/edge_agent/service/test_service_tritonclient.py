"""A standard KServe v2 client (tritonclient.http) against the agent on a real uvicorn."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

SIZE = 32


def test_tritonclient_works_unchanged(agent: Any, live: Any, expected: Any) -> None:
    headers = agent.headers()
    with live(agent.app) as server:
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("fovea-student", headers=headers)
        meta = client.get_model_metadata("fovea-student", headers=headers)
        assert meta["inputs"][0]["shape"] == [-1, 3, SIZE, SIZE]
        config = client.get_model_config("fovea-student", headers=headers)
        assert config["max_batch_size"] == 8
        x = np.random.default_rng(2).normal(size=(4, 3, SIZE, SIZE)).astype(np.float32)
        want = expected(x)
        for binary_in in (True, False):
            for binary_out in (True, False):
                inp = httpclient.InferInput("images", list(x.shape), "FP32")
                inp.set_data_from_numpy(x, binary_data=binary_in)
                outs = [
                    httpclient.InferRequestedOutput(name, binary_data=binary_out)
                    for name in ("grade_logits", "gradable_logit")
                ]
                # tritonclient writes its framing headers into the dict it is given: pass a copy
                result = client.infer("fovea-student", [inp], outputs=outs, headers=dict(headers))
                np.testing.assert_allclose(
                    result.as_numpy("grade_logits"), want["grade_logits"], rtol=1e-6
                )
                assert result.as_numpy("gradable_logit").shape == (4, 1)
        inp = httpclient.InferInput("images", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer(
            "fovea-student", [inp], headers=dict(headers), request_compression_algorithm="gzip"
        )
        assert result.as_numpy("grade_logits").shape == (4, 5)  # no outputs named: all, binary
        bad = httpclient.InferInput("images", [1, 3, SIZE, SIZE], "FP64")
        bad.set_data_from_numpy(np.zeros((1, 3, SIZE, SIZE)))
        with pytest.raises(InferenceServerException, match="must be FP32"):
            client.infer("fovea-student", [bad], headers=dict(headers))
        with pytest.raises(InferenceServerException, match="bearer"):
            client.infer("fovea-student", [inp])
        client.close()
