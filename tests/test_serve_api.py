"""`vidcore serve` driven by the official `openai` SDK, unchanged, against a live server on loopback.

One server (latte-shapes on the CPU, an API key, a queue of 3, bodies up to 1 MiB)
runs in a child process for the module; jobs are tiny (4 frames, 2-3 steps), so
each takes well under a second, and a "long" job (1000 steps) is one that tests
cancel or queue behind.
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
pytest.importorskip("vidcore_latte")

import serve_live  # noqa: E402
from serve_live import httpx  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks its videos API deprecated
QUICK = {"steps": 2, "frames": 4, "seed": 7}
LONG = {"steps": 1000, "frames": 16, "seed": 1}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve-api")
    server = serve_live.start(out, "--max-queue", "3", "--max-body-mb", "1")
    yield server
    server.stop()


@pytest.fixture
def client(live):
    return live.client()


def one_line_error(backend_name: str, **settings) -> str:
    """What `vidcore generate` says for these settings: the same code must say it over HTTP."""
    from vidcore.errors import VidcoreError
    from vidcore.plugins import get_backend
    from vidcore.request import load_inputs, resolve

    b = get_backend(backend_name)
    with pytest.raises(VidcoreError) as info:
        load_inputs(b, resolve(b, "a red ball", **settings))
    return str(info.value)


def done(client, **kwargs):
    """``create_and_poll`` of a quick job, failing (not hanging) if it never ends."""
    return serve_live.within(60, client.videos.create_and_poll, poll_interval_ms=100, extra_body=QUICK, **kwargs)


def wait_in_progress(client, video_id: str):
    return serve_live.wait_for(lambda: (v := client.videos.retrieve(video_id)).status == "in_progress"
                               and v.progress > 0 and v)


def test_create_and_poll_then_download_a_playable_mp4(client, live, tmp_path):
    from vidcore.video import read_video

    video = serve_live.within(60, client.videos.create_and_poll, prompt="a red ball moving left", size="64x64",
                              poll_interval_ms=100, extra_body=QUICK)
    assert video.status == "completed", video
    assert (video.object, video.model, video.size, video.progress) == ("video", "latte-shapes", "64x64", 100)
    assert video.seconds == "0.5" and video.prompt == "a red ball moving left"  # 4 frames at 8 fps
    assert re.fullmatch(r"video_[0-9a-f]{32}", video.id)
    assert video.completed_at >= video.created_at > 0 and video.error is None
    data = client.videos.download_content(video.id).content
    assert len(data) > 1000 and data[4:8] == b"ftyp"
    path = tmp_path / "got.mp4"
    path.write_bytes(data)
    frames, fps = read_video(path)
    assert tuple(frames.shape) == (4, 64, 64, 3) and fps == 8
    record = live.out / "videos" / f"{video.id}.json"
    assert record.is_file() and '"seed": 7' in record.read_text()


def test_json_body_with_our_fields_and_seconds(live):
    with live.http() as http:
        r = http.post("/v1/videos", json={"prompt": "a blue square", "model": "latte-shapes", "seconds": "1",
                                          "steps": 2, "guidance": 1.5, "negative_prompt": "blurry",
                                          "sampler": "euler"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "queued" and body["seconds"] == "1" and body["size"] == "64x64"  # 8 frames
        done = serve_live.wait_for(lambda: (v := http.get(f"/v1/videos/{body['id']}").json())["status"]
                                   in ("completed", "failed") and v)
    assert done["status"] == "completed", done
    record = (live.out / "videos" / f"{body['id']}.json").read_text()
    assert '"frames": 8' in record and '"sampler": "euler"' in record and '"negative": "blurry"' in record


@pytest.mark.parametrize("kwargs, settings", [
    ({"size": "65x64"}, {"size": "65x64"}),
    ({"size": "big"}, {"size": "big"}),
    ({"extra_body": {"frames": 40}}, {"frames": 40}),
    ({"extra_body": {"steps": 0}}, {"steps": 0}),
])
def test_bad_settings_are_a_400_with_the_clis_one_line(client, kwargs, settings):
    with pytest.raises(openai.BadRequestError) as info:
        client.videos.create(prompt="a red ball", **kwargs)
    expected = one_line_error("latte-shapes", **settings)
    assert info.value.status_code == 400
    assert info.value.body["message"] == expected and "\n" not in expected


@pytest.mark.parametrize("kwargs, message", [
    ({"model": "sora-2"}, "unknown model 'sora-2'; choose one of: latte-shapes"),
    ({"seconds": "4"}, "frame count 32 is not supported; use any count frames, at least 2 up to 16"),
    ({"extra_body": {"steps": "two"}}, "steps must be a whole number; got 'two'"),
    ({"extra_body": {"frames": 2.5}}, "frames must be a whole number; got 2.5"),
    ({"extra_body": {"sampler": "nope"}}, "unknown sampler 'nope'; choose one of: ddim, "),
    ({"seconds": "1", "extra_body": {"frames": 4}}, "give seconds or frames, not both"),
    ({"extra_body": {"output": "/etc/passwd"}}, "unknown field(s) output; accepted: "),
])
def test_bad_fields_are_a_400_in_one_line(client, kwargs, message):
    with pytest.raises(openai.BadRequestError) as info:
        client.videos.create(prompt="a red ball", **kwargs)
    assert info.value.body["message"].startswith(message), info.value.body
    assert "\n" not in info.value.body["message"]


def test_raw_bodies_refused_in_one_line(live):
    with live.http() as http:
        cases = [
            (http.post("/v1/videos", json={"size": "64x64"}), "prompt is required"),
            (http.post("/v1/videos", content=b"{not json", headers={"Content-Type": "application/json"}),
             "the body is not valid JSON"),
            (http.post("/v1/videos", json=["a"]), "the JSON body must be an object of fields"),
            (http.post("/v1/videos", content=b"prompt", headers={"Content-Type": "text/plain"}),
             "send the fields as multipart/form-data or application/json"),
            (http.post("/v1/videos", json={"prompt": "x", "input_reference": {"image_url": "https://example.com/a"}}),
             "input_reference image_url must be a base64 data URL"),
            (http.get("/v1/videos", params={"limit": "0"}), "limit must be between 1 and 100; got 0"),
        ]
    for r, message in cases:
        assert r.status_code == 400, r.text
        assert r.json()["error"]["message"].startswith(message), r.json()
        assert r.json()["error"]["type"] == "invalid_request_error"


def test_list_pages_the_way_the_sdk_expects(client):
    ids = [client.videos.create(prompt=f"clip {i}", extra_body=QUICK).id for i in range(3)]
    page = client.videos.list(limit=2)
    assert len(page.data) == 2 and page.has_more and page.last_id == page.data[-1].id
    listed = [v.id for v in client.videos.list(limit=2)]  # the SDK follows after=last_id to the end
    assert len(listed) == len(set(listed))
    assert listed[:3] == ids[::-1]  # newest first
    ascending = [v.id for v in client.videos.list(order="asc", limit=100)]
    assert ascending == listed[::-1]
    for i in ids:
        serve_live.within(120, client.videos.poll, i, poll_interval_ms=100)


def test_delete_removes_the_job_and_its_files(client, live):
    video = done(client, prompt="a red ball")
    mp4 = live.out / "videos" / f"{video.id}.mp4"
    assert mp4.is_file()
    gone = client.videos.delete(video.id)
    assert (gone.id, gone.deleted, gone.object) == (video.id, True, "video.deleted")
    assert not mp4.exists() and not mp4.with_suffix(".json").exists()
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.delete(video.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(video.id)


def finished(live, outcome: str) -> float:
    with live.http() as http:
        text = http.get("/metrics").text
    m = re.search(rf'^vidcore_jobs_finished_total{{outcome="{outcome}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_delete_cancels_a_running_job_and_the_worker_goes_on(client, live):
    before = finished(live, "cancelled")
    long = client.videos.create(prompt="a very long clip", extra_body=LONG)
    running = wait_in_progress(client, long.id)
    assert 0 < running.progress < 100
    client.videos.delete(long.id)
    serve_live.wait_for(lambda: finished(live, "cancelled") == before + 1, timeout=30)
    assert not list((live.out / "videos").glob(f"*{long.id}*"))
    after = done(client, prompt="next")
    assert after.status == "completed"


def test_a_full_queue_is_a_429(client):
    long = client.videos.create(prompt="keeps the worker busy", extra_body=LONG)
    wait_in_progress(client, long.id)
    queued = [client.videos.create(prompt=f"waits {i}", extra_body=QUICK) for i in range(3)]
    with pytest.raises(openai.RateLimitError) as info:
        client.videos.create(prompt="one too many", extra_body=QUICK)
    assert info.value.status_code == 429
    assert info.value.body["message"] == "the queue is full (3 jobs waiting); retry later"
    for v in queued:  # a queued job can be deleted too; it never runs
        client.videos.delete(v.id)
    client.videos.delete(long.id)
    assert {v.id for v in client.videos.list(limit=100)}.isdisjoint({v.id for v in [long, *queued]})


def test_progress_and_the_poll_hint_while_running(client, live):
    long = client.videos.create(prompt="watch me", extra_body=LONG)
    raw = client.videos.with_raw_response.retrieve(long.id)
    assert raw.headers.get("openai-poll-after-ms") == "1000"
    seen = wait_in_progress(client, long.id)
    assert seen.status == "in_progress" and 0 < seen.progress < 100
    client.videos.delete(long.id)


def test_auth_is_required_and_checked(live):
    with pytest.raises(openai.AuthenticationError) as info:
        live.client(key="wrong-key").videos.list()
    assert info.value.status_code == 401 and "API key" in info.value.body["message"]
    with live.http(key=None) as http:
        assert http.get("/v1/videos").status_code == 401
        assert http.get("/v1/models").status_code == 401
        assert http.get("/metrics").status_code == 401
        assert http.post("/v1/videos", json={"prompt": "x"}).status_code == 401
        assert http.get("/health").status_code == 200  # liveness stays open
    with live.http(key=serve_live.KEY + "x") as http:
        assert http.get("/v1/videos").status_code == 401


def test_oversized_bodies_are_a_413(live):
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (2 * 2**20)
    with live.http() as http:
        r = http.post("/v1/videos", data={"prompt": "x"}, files={"input_reference": ("a.png", big, "image/png")})
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large", r.text

        def chunks():  # no Content-Length: the limit counts what streams in
            for _ in range(40):
                yield b"x" * 65536

        r = http.post("/v1/videos", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413, r.text
    assert not list((live.out / "inputs").iterdir())


def test_an_upload_that_is_not_an_image_is_refused(client, live):
    with pytest.raises(openai.BadRequestError) as info:
        client.videos.create(prompt="x", input_reference=("notes.txt", b"hello", "text/plain"))
    assert info.value.body["message"] == "input_reference must be a PNG, JPEG or WebP image"
    assert not list((live.out / "inputs").iterdir())


def test_models_health_and_metrics(client, live):
    assert [m.id for m in client.models.list()] == ["latte-shapes"]
    with live.http() as http:
        health = http.get("/health").json()
        assert health["ready"] is True and health["workers"][0]["device"] == "cpu"
        assert http.get("/health/ready").status_code == 200
        done(client, prompt="counted")
        text = http.get("/metrics").text
    for name in ("vidcore_queue_depth", 'vidcore_jobs{state="completed"}', "vidcore_workers_ready 1.0",
                 "vidcore_step_seconds_count", "vidcore_job_seconds_count"):
        assert name in text, name
    assert float(re.search(r'^vidcore_jobs\{state="completed"\} (\S+)$', text, re.M).group(1)) >= 1


def test_ids_never_reach_the_file_system(live):
    with live.http() as http:
        for bad in ("..", "../jobs.sqlite3", "video_" + "0" * 31, "%2e%2e%2fjobs.sqlite3"):
            r = http.get(f"/v1/videos/{bad}/content")
            assert r.status_code == 404, (bad, r.status_code)
        assert http.delete("/v1/videos/..").status_code in (404, 405)
    assert (live.out / "jobs.sqlite3").is_file()


def test_a_second_server_on_the_same_store_is_refused(live, capsys):
    from vidcore.cli import main

    assert main(["serve", "--out", str(live.out), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use by another running vidcore serve" in err, err


def test_http_client_sees_openai_error_shape(live):
    r = httpx.get(f"{live.url}/v1/videos/video_{'a' * 32}", headers={"Authorization": f"Bearer {serve_live.KEY}"})
    assert r.status_code == 404
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
