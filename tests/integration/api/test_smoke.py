def test_healthz(api):
    assert api.http.get("/healthz").text == "ok"
