"""``hybridpose serve``: real HTTP requests against a server started on an ephemeral port of 127.0.0.1 over
the tiny run, every bad upload refused with its reason and nothing left behind, the admission bound (503),
the timeout (504), the CLI, and the page in headless Chromium (tests/browser.py)."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("python_multipart")

from browser import Browser, chromium  # noqa: E402
from hybridpose.serve.app import Limits  # noqa: E402
from hybridpose.serve.server import Server  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
PHOTOS = sorted(SAMPLE.rglob("*.jpg"))
LIMIT = 3_000_000


def multipart(files: list[tuple[str, bytes]], content_type: str = "image/jpeg") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
             f"Content-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def request(url: str, method: str = "GET", path: str = "/", body: bytes | None = None,
            content_type: str | None = None, chunked: bool = False, timeout: float = 120) -> tuple[int, dict]:
    """(status, JSON body) of one HTTP request; a server that answers before reading the whole body is fine."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {"Content-Type": content_type} if content_type else {}
    try:
        try:
            if chunked:
                conn.request(method, path, body=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                             headers=headers, encode_chunked=True)
            else:
                conn.request(method, path, body=body, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body went out: read its answer
        res = conn.getresponse()
        raw = res.read()
        return res.status, json.loads(raw) if raw else {}
    finally:
        conn.close()


def post(url: str, files: list[tuple[str, bytes]], **kw) -> tuple[int, dict]:
    body, ctype = multipart(files, kw.pop("part_type", "image/jpeg"))
    return request(url, "POST", "/predict", body, kw.pop("content_type", ctype), **kw)


@pytest.fixture(scope="module")
def server(tiny_run):
    with Server(tiny_run, port=0, limits=Limits(max_upload_bytes=LIMIT, timeout_s=60, queue=2, max_files=4)) as s:
        yield s


def _left(server) -> list[Path]:
    return list(server.workdir.iterdir())


def test_binds_to_this_machine_by_default(server):
    assert server.host == "127.0.0.1" and server.port > 0
    assert server.sock.getsockname()[0] == "127.0.0.1"


def test_health_and_model(server, tiny_run):
    status, health = request(server.url, path="/health")
    assert status == 200 and health["status"] == "ok" and health["kind"] == "photos"
    status, model = request(server.url, path="/model")
    config = json.loads((tiny_run / "config.json").read_text())
    assert status == 200
    assert model["classes"] == sorted({p.parent.name for p in PHOTOS}) or set(model["classes"]) == {p.parent.name for p in PHOTOS}
    assert model["levels"][0] == "class" and model["hierarchy"] == config["hierarchy"]
    assert model["branches"] == config["branches"]
    assert model["skeleton"]["name"] == "body" and len(model["skeleton"]["keypoints"]) == len(
        {n for e in model["skeleton"]["edges"] for n in e} | set(model["skeleton"]["keypoints"]))
    assert model["versions"]["hybridpose"] and model["versions"]["torch"]
    assert model["rules"] is None  # the tiny run was never calibrated
    assert model["limits"]["max_upload_bytes"] == LIMIT


def test_predict_a_photo_as_predict_does(server, tiny_run):
    from hybridpose.inference.classifier import HybridPoseClassifier

    photo = PHOTOS[0]
    status, answer = post(server.url, [(photo.name, photo.read_bytes())])
    assert status == 200 and answer["kind"] == "photos"
    (row,) = answer["predictions"]
    expected = HybridPoseClassifier.load(tiny_run).predict([photo]).iloc[0]
    assert row["path"] == photo.name and row["status"] == expected["status"] == "ok"
    for col in ("class", "subgroup", "group", "top1", "top2", "rule", "image_top", "keypoint_top"):
        assert row[col] == expected[col], col
    assert row["confidence"] == pytest.approx(float(expected["confidence"]), abs=1e-4)
    kp = np.array(row["keypoints"], float)
    assert kp.shape == (33, 4)
    assert (kp[:, 0] >= -row["width"]).all() and (kp[:, 0] <= 2 * row["width"]).all()
    assert np.nanmedian(kp[:, 0]) == pytest.approx(row["width"] / 2, rel=0.9)
    assert _left(server) == []


def test_several_photos_one_unreadable(server):
    a, b = PHOTOS[1], PHOTOS[-1]
    cut = a.read_bytes()[:1500]
    status, answer = post(server.url, [(a.name, a.read_bytes()), ("cut.jpg", cut), (b.name, b.read_bytes())])
    assert status == 200
    rows = answer["predictions"]
    assert [r["path"] for r in rows] == [a.name, "cut.jpg", b.name]
    assert rows[0]["status"] == rows[2]["status"] == "ok" and rows[0]["class"] and rows[2]["class"]
    assert rows[1]["status"] == "unreadable" and rows[1]["class"] is None and rows[1]["keypoints"] is None
    assert _left(server) == []


def _predict_reason(tmp_path: Path, data: bytes, suffix: str = ".jpg") -> str:
    """``status: reason`` that predict's photo reader gives the same bytes."""
    from hybridpose.data.images import ImageLoadError, load_image

    path = tmp_path / f"same{suffix}"
    path.write_bytes(data)
    with pytest.raises(ImageLoadError) as e:
        load_image(path)
    return f"{e.value.status}: {e.value.reason}"


def _empty_video(path: Path) -> bytes:
    import av

    with av.open(str(path), "w") as c:  # an .mp4 with its header and no frame
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        c.start_encoding()  # the header is written although no frame follows
        for packet in s.encode(None):
            c.mux(packet)
    return path.read_bytes()


def test_bad_uploads_get_a_reason_and_leave_nothing(server, tmp_path):
    photo = PHOTOS[0].read_bytes()
    garbage = b"this is not a photo at all\n" * 40
    cases = {  # name -> (status, a part of the one-line reason)
        "garbage": (post(server.url, [("x.jpg", garbage)]), 415, f"x.jpg: {_predict_reason(tmp_path, garbage)}"),
        "zero bytes": (post(server.url, [("empty.jpg", b"")]), 400, f"empty.jpg: {_predict_reason(tmp_path, b'')}"),
        "cut photo": (post(server.url, [("cut.jpg", photo[:900])]), 422,
                      f"cut.jpg: {_predict_reason(tmp_path, photo[:900])}"),
        "huge": (post(server.url, [("big.jpg", photo + os.urandom(LIMIT))]), 413, "larger than the limit of 3 MB"),
        "huge, no length": (post(server.url, [("big.jpg", photo + os.urandom(LIMIT))], chunked=True), 413,
                            "larger than the limit"),
        "no frames": (post(server.url, [("clip.mp4", _empty_video(tmp_path / "e.mp4"))], part_type="video/mp4"), 422,
                      "clip.mp4: unreadable: the file holds no video stream"),
        "not multipart": (request(server.url, "POST", "/predict", b'{"photo": 1}', "application/json"), 415,
                          "the request is application/json; send the photos or the video as multipart/form-data"),
        "type by name only": (post(server.url, [("x.png", garbage)], part_type="image/png"), 415,
                              "not an image (cannot identify format)"),
        "traversal": (post(server.url, [("../../etc/x.jpg", photo)]), 400, "holds a folder part"),
        "windows traversal": (post(server.url, [("..\\..\\x.jpg", photo)]), 400, "holds a folder part"),
        "too many files": (post(server.url, [(f"{i}.jpg", photo) for i in range(5)]), 413, "more than 4 files"),
        "no file": (request(server.url, "POST", "/predict", *multipart([])), 400, "holds no file"),
    }
    for what, ((status, body), code, reason) in cases.items():
        assert status == code, (what, status, body)
        assert reason in body["detail"] and "\n" not in body["detail"], (what, body)
        assert _left(server) == [], what
    assert not (Path("/etc") / "x.jpg").exists() and not (server.workdir.parent / "x.jpg").exists()
    status, health = request(server.url, path="/health")
    assert status == 200 and health["in_progress"] == 0  # every refused request gave its slot back


def test_a_video_to_a_photo_run_gets_predicts_reason(server, tmp_path):
    from hybridpose.data.sources import classify
    from hybridpose.data.video import VideoWriter

    path = tmp_path / "v.mp4"
    with VideoWriter(path, 5, 64, 64) as w:
        for i in range(3):
            w.write(np.full((64, 64, 3), 40 * i, np.uint8))
    status, body = post(server.url, [("squat.mov", path.read_bytes())], part_type="application/octet-stream")
    expected = classify(path)
    assert status == 422 and body["detail"] == f"squat.mov: {expected.status}: {expected.reason}"
    assert _left(server) == []


def _hold_model(server):
    """The model's lock taken by the test: predictions admitted now wait for it."""
    server.model.lock.acquire()
    return server.model.lock


def test_beyond_the_queue_503_then_all_answered(server):
    photo = PHOTOS[2]
    lock = _hold_model(server)
    answers: list[int] = []
    try:
        waiting = [threading.Thread(target=lambda: answers.append(post(server.url, [(photo.name, photo.read_bytes())])[0]))
                   for _ in range(2)]
        for t in waiting:
            t.start()
        deadline = time.monotonic() + 30
        while request(server.url, path="/health")[1]["in_progress"] < 2:
            assert time.monotonic() < deadline, "the two requests were never admitted"
            time.sleep(0.05)
        status, body = post(server.url, [(photo.name, photo.read_bytes())])
        assert status == 503 and "busy" in body["detail"]
    finally:
        lock.release()
    for t in waiting:
        t.join(120)
    assert answers == [200, 200]
    assert request(server.url, path="/health")[1]["in_progress"] == 0


def test_a_slow_prediction_gets_504_and_its_files_go(tiny_run):
    photo = PHOTOS[3]
    with Server(tiny_run, port=0, limits=Limits(timeout_s=0.5)) as s:
        lock = _hold_model(s)
        try:
            t0 = time.monotonic()
            status, body = post(s.url, [(photo.name, photo.read_bytes())])
            assert status == 504 and "longer than 0.5 s" in body["detail"]
            assert time.monotonic() - t0 < 10
            assert len(_left(s)) == 1  # the upload waits with its prediction
        finally:
            lock.release()
        deadline = time.monotonic() + 60
        while _left(s) or request(s.url, path="/health")[1]["in_progress"]:
            assert time.monotonic() < deadline, "the timed-out prediction never finished"
            time.sleep(0.1)
        workdir = s.workdir
    assert not workdir.exists()  # the server's own folder goes with it


@pytest.mark.skipif(chromium() is None and not os.environ.get("HYBRIDPOSE_REQUIRE_CHROMIUM"),
                    reason="headless Chromium not installed (.ci/run installs it, and there this test never skips)")
def test_page_shows_the_label_of_an_uploaded_photo(server, tmp_path):
    assert chromium() is not None, "HYBRIDPOSE_REQUIRE_CHROMIUM is set and no Chromium is installed"
    photo = PHOTOS[0]
    _, answer = post(server.url, [(photo.name, photo.read_bytes())])
    label = answer["predictions"][0]["class"]
    shot = tmp_path / "page.png"
    with Browser(tmp_path / "profile") as b:
        b.call("Network.enable", session=True)
        b.open(server.url + "/")
        b.wait_for("document.body.dataset.ready === '1'")
        assert "8 classes" in b.evaluate("document.getElementById('model').textContent")
        b.choose_files("#files", [photo])
        shown = b.wait_for("document.querySelector('.card') && document.querySelector('.card').dataset.label")
        text = b.evaluate("document.querySelector('.card').innerText")
        levels = b.evaluate("[...document.querySelectorAll('.card .levels td')].map(td => td.textContent)")
        top = b.evaluate("[...document.querySelectorAll('.card .top li')].length")
        # the first keypoint drawn where the API put it: the dot's colour on the canvas
        x, y = answer["predictions"][0]["keypoints"][0][:2]
        pixel = b.evaluate(f"Array.from(document.querySelector('.card canvas').getContext('2d')"
                           f".getImageData({round(x)}, {round(y)}, 1, 1).data)")
        b.screenshot(shot)
        urls = [e["params"]["request"]["url"] for e in b.events if e.get("method") == "Network.requestWillBeSent"]
    assert shown == label and label in text and "no rule fired" in text
    assert levels[::2] == ["class", "subgroup", "group"] and levels[1] == label
    assert top == 5
    assert np.abs(np.array(pixel[:3]) - [255, 59, 107]).max() <= 8, pixel  # #ff3b6b, the keypoint colour
    assert urls and all(u.startswith((server.url, "blob:", "data:")) for u in urls), urls  # nothing from outside
    from PIL import Image

    with Image.open(shot) as im:
        gray = np.asarray(im.convert("L"), float)
    assert gray.std() > 20
    keep = os.environ.get("HYBRIDPOSE_SCREENSHOT")
    if keep:  # where to keep the screenshot to look at it
        Path(keep).write_bytes(shot.read_bytes())
    assert _left(server) == []


@pytest.mark.slow
def test_cli_serves_until_interrupted(tiny_run, tmp_path):
    cmd = [sys.executable, "-m", "hybridpose_cli.main", "serve", str(tiny_run), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "300", "TMPDIR": str(tmp_path)})
    try:
        said = [proc.stdout.readline()]  # the run's ONNX graph, built on first use, may say so first
        while said[-1] and not said[-1].startswith("serving ") and len(said) < 20:
            said.append(proc.stdout.readline())
        line = said[-1]
        assert line.startswith(f"serving {tiny_run} at http://127.0.0.1:"), said
        url = line.split(" at ", 1)[1].split("/ ", 1)[0]
        status, health = request(url, path="/health")
        assert status == 200 and health["status"] == "ok"
        status, answer = post(url, [(PHOTOS[0].name, PHOTOS[0].read_bytes())])
        assert status == 200 and answer["predictions"][0]["class"]
        assert len(list(tmp_path.glob("hybridpose-serve-*"))) == 1
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode in (0, 130), rest  # 130: stopped by Ctrl-C, as the shell reports it
    assert "Traceback" not in rest, rest
    assert not list(tmp_path.glob("hybridpose-serve-*"))  # the upload folder removed at exit


def test_cli_refuses_a_missing_run_and_a_taken_port(monkeypatch, capsys, tmp_path):
    import socket

    from test_cli import cli
    from test_cli_errors import one_line_error

    one_line_error(*cli(monkeypatch, capsys, "serve", tmp_path / "nope", "--port", "0"), "nope")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = str(taken.getsockname()[1])
        one_line_error(*cli(monkeypatch, capsys, "serve", tmp_path / "nope", "--port", port), "cannot listen there", port)
    finally:
        taken.close()
    one_line_error(*cli(monkeypatch, capsys, "serve", tmp_path / "nope", "--queue", "0"), "--queue")


@pytest.mark.slow
def test_a_clip_run_answers_one_row_per_clip(clip_data, tmp_path_factory, tmp_path):
    from hybridpose.data.clips import sample_of
    from hybridpose.inference.clips import ClipPredictor
    from hybridpose.train.fit import fit

    run = tmp_path_factory.mktemp("serve_clip_run") / "run"
    fit(clip_data, run, folds=2, preset="tiny", show_progress=False, clips={"fps": 5})
    video = clip_data / "squat" / "squat_correct_003.mp4"  # 12 frames at 10 fps: 6 sampled at 5 fps
    expected = ClipPredictor(run).predict_clip(sample_of(video))
    with Server(run, port=0) as s:
        status, answer = post(s.url, [("my squat.mp4", video.read_bytes())], part_type="application/octet-stream")
        assert status == 200 and answer["kind"] == "clips"
        (row,) = answer["predictions"]
        assert row["path"] == "my squat.mp4" and row["kind"] == "video" and row["status"] == expected.status
        for col in ("class", "top1", "rule", "frames", "image_top", "clip_keypoint_top"):
            assert row[col] == expected.row[col], col
        assert [f["frame"] for f in row["keypoints"]] == [f.index for f in expected.frames]
        assert any(f["keypoints"] is not None and len(f["keypoints"]) == 33 for f in row["keypoints"])
        status, body = post(s.url, [("e.mp4", _empty_video(tmp_path / "e.mp4"))])
        assert status == 422 and body["detail"] == "e.mp4: unreadable: the file holds no video stream"
        photo = PHOTOS[0]
        status, answer = post(s.url, [(photo.name, photo.read_bytes())])
        assert status == 200 and answer["predictions"][0]["kind"] == "photo"  # a clip of one frame
        assert _left(s) == []


def test_a_slow_upload_gets_408_and_its_files_go(tiny_run):
    import socket

    with Server(tiny_run, port=0, limits=Limits(timeout_s=1.0)) as s:
        body, ctype = multipart([(PHOTOS[0].name, PHOTOS[0].read_bytes())])
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        try:  # the headers and half the body, then nothing: a client that stalls
            sock.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
            answer = b""
            while b"}" not in answer:  # the headers, then the JSON body
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
            answer = answer.decode()
        finally:
            sock.close()
        assert answer.startswith("HTTP/1.1 408") and "did not arrive within 1 s" in answer, answer
        assert _left(s) == []
        assert request(s.url, path="/health")[1]["in_progress"] == 0


@pytest.mark.skipif(chromium() is None and not os.environ.get("HYBRIDPOSE_REQUIRE_CHROMIUM"),
                    reason="headless Chromium not installed (.ci/run installs it, and there this test never skips)")
def test_page_webcam_sends_frames_as_fast_as_answered(server, tmp_path):
    """Chromium's fake camera (a moving test pattern) stands in for a webcam."""
    fake = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
    served = request(server.url, path="/health")[1]["served"]
    with Browser(tmp_path / "profile", args=fake) as b:
        b.open(server.url + "/")
        b.wait_for("document.body.dataset.ready === '1'")
        b.evaluate("document.getElementById('camera').click()")
        b.wait_for("document.getElementById('status').textContent.includes('frames/s') && "
                   "document.querySelectorAll('.card').length === 1 && "
                   "document.querySelector('.card .file').textContent.startsWith('webcam.jpg')", timeout=90)
        time.sleep(2)
        b.evaluate("document.getElementById('stop').click()")
        error = b.evaluate("document.getElementById('error').hidden")
        rate = b.evaluate("document.getElementById('status').textContent")
    sent = request(server.url, path="/health")[1]["served"] - served
    assert error is True  # no refusal shown
    assert sent >= 2 and "frames/s" in rate, (sent, rate)  # frame after frame, each when the last was answered
    deadline = time.monotonic() + 60
    while request(server.url, path="/health")[1]["in_progress"]:  # the last frame may still be on its way
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert _left(server) == []
