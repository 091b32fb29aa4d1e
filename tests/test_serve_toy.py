"""The toy backend served from a thread: image-to-video with ``input_reference`` uploads; readiness."""

from __future__ import annotations

import base64
import json

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

import serve_live  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def served(tmp_path, toy_ckpt):
    from vidcore.serve.config import ServeConfig

    out = tmp_path / "out"
    config = ServeConfig(backends=("toy",), out=out, ckpts={"toy": str(toy_ckpt)}, api_key="k")
    with serve_live.in_thread(config) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0), out, url


def png(tmp_path, colour=(200, 30, 30)) -> bytes:
    import torch

    from vidcore.video import write_image

    path = tmp_path / "ref.png"
    write_image(path, torch.tensor(colour, dtype=torch.uint8).expand(16, 16, 3).contiguous())
    return path.read_bytes()


def test_an_uploaded_image_drives_image_to_video(served, tmp_path):
    client, out, _ = served
    data = png(tmp_path)
    video = serve_live.within(60, client.videos.create_and_poll, prompt="a toy",
                              input_reference=("ref.png", data, "image/png"), poll_interval_ms=100,
                              extra_body={"steps": 2})
    assert video.status == "completed", video.error
    assert client.videos.download_content(video.id).content[4:8] == b"ftyp"
    record = json.loads((out / "videos" / f"{video.id}.json").read_text())
    stored = out / "inputs" / f"{video.id}.png"
    assert record["request"]["task"] == "i2v" and record["request"]["image"] == str(stored)
    assert stored.read_bytes() == data  # named by the job's id, not by the upload's name
    shown = client.get(f"/videos/{video.id}/record", cast_to=object)  # the record as the API serves it
    assert shown["request"]["image"] == "input_reference" and shown["complete"] is True
    assert shown["checkpoint"]["dir"] == "toy-ckpt" and str(tmp_path) not in json.dumps(shown)
    assert {k: v for k, v in shown["request"].items() if k != "image"} == {
        k: v for k, v in record["request"].items() if k != "image"}
    client.videos.delete(video.id)
    assert not stored.exists()


def test_a_data_url_in_json_is_an_upload_too(served, tmp_path):
    _, out, url = served
    from serve_live import httpx

    ref = {"image_url": "data:image/png;base64," + base64.b64encode(png(tmp_path)).decode()}
    r = httpx.post(f"{url}/v1/videos", json={"prompt": "a toy", "input_reference": ref, "steps": 2},
                   headers={"Authorization": "Bearer k"})
    assert r.status_code == 200, r.text
    assert (out / "inputs" / f"{r.json()['id']}.png").is_file()


def test_a_broken_image_is_a_400_that_does_not_name_server_paths(served, tmp_path):
    client, out, _ = served
    with pytest.raises(openai.BadRequestError) as info:
        client.videos.create(prompt="a toy", input_reference=("../../etc/x.png", b"\x89PNG\r\n\x1a\n" + b"junk" * 10,
                                                              "image/png"))
    message = info.value.body["message"]
    assert message.startswith("cannot read image input_reference:"), message
    assert str(out) not in message and not list((out / "inputs").iterdir())


def test_not_ready_until_the_weights_load_and_a_failed_load_says_why(tmp_path, toy_registry):
    from serve_live import httpx

    from vidcore.serve.config import ServeConfig

    empty = tmp_path / "no-weights"
    empty.mkdir()
    config = ServeConfig(backends=("toy",), out=tmp_path / "out", ckpts={"toy": str(empty)})
    with serve_live.in_thread(config, ready=False) as url:
        health = serve_live.wait_for(lambda: (h := httpx.get(f"{url}/health/ready")).json()["workers"][0]["error"]
                                     and h)
        assert health.status_code == 503 and health.json()["ready"] is False
        assert "\n" not in health.json()["workers"][0]["error"]
        assert httpx.get(f"{url}/health").status_code == 200  # alive all the same
        r = httpx.post(f"{url}/v1/videos", json={"prompt": "waits", "steps": 2})
        assert r.status_code == 200 and r.json()["status"] == "queued"  # accepted: it runs once a worker can
        early = httpx.get(f"{url}/v1/videos/{r.json()['id']}/record")
        assert early.status_code == 404 and early.json()["error"]["code"] == "not_ready"
