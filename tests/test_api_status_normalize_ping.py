"""GET /messagestatus, POST /normalize and GET /ping."""

import time

from tests.conftest import base_config, rows

README_NUMBERS = ["0830000000", "27840000000", "numbersToClean", "0820000000"]


def send(client, *numbers):
    response = client.post("/sendsms", json={"message": "x", "msisdns": list(numbers)})
    assert response.status_code == 200
    return response.get_json()["refNumber"]


def test_readme_normalize_example(client):
    response = client.post("/normalize", json={"msisdns": README_NUMBERS})
    assert response.status_code == 200
    assert response.get_json() == ["27830000000", "27840000000", "27820000000"]


def test_normalize_takes_form_csv_and_drops_duplicates(client):
    response = client.post("/Normalize", data={"msisdns": "0830000000,+27830000000,bad,0840000000"})
    assert response.get_json() == ["27830000000", "27840000000"]


def test_normalize_without_numbers_is_406(client):
    response = client.post("/normalize", json={"numbers": ["0830000000"]})
    assert response.status_code == 406
    assert "msisdns" in response.get_json()["error"]


def test_normalize_honours_country_order_and_mobile_only(make_app):
    config = base_config(countries=["BW"])
    client = make_app(config).test_client()
    assert client.post("/normalize", json={"msisdns": ["0830000000"]}).get_json() == []


def test_status_of_a_delivered_number_is_fetched_once_and_stored(client, db, provider):
    ref = send(client, "0830000000")  # mock: last digit 0 -> delivered
    response = client.get("/messagestatus/0830000000")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == "delivered"
    assert provider.status_queries == 1
    assert rows(db, "SELECT sent, delivered, failed FROM sendlog WHERE id = %s", int(ref)) == [
        (0, 1, 0)
    ]
    # Final now: the provider is not asked again.
    assert client.get("/messageStatus/27830000000").get_data(as_text=True) == "delivered"
    assert provider.status_queries == 1


def test_status_failed_and_in_flight(client, db):
    send(client, "0830000006", "0830000008")
    assert client.get("/messagestatus/0830000006").get_data(as_text=True) == "failed"
    assert client.get("/messagestatus/0830000008").get_data(as_text=True) == "sent"
    assert rows(db, "SELECT sent, delivered, failed FROM sendlog") == [(1, 0, 1)]
    assert rows(db, "SELECT errorcode, reason FROM sms WHERE status = 'failed'") == [
        ("005", "Delivery failed")
    ]


def test_status_is_of_the_most_recent_message(client, db):
    send(client, "0830000000")
    client.get("/messagestatus/0830000000")
    send(client, "0830000000")
    with db.cursor() as cur:  # make the second one still in flight
        cur.execute("UPDATE sms SET providerid = 'mock-27830000008-x' WHERE id = 2")
    assert client.get("/messagestatus/0830000000").get_data(as_text=True) == "sent"


def test_status_of_an_unknown_number_says_no_data(client, db):
    response = client.get("/messagestatus/0831234567")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "Error: no data available"


def test_ping_answers_the_time(client):
    body = client.get("/PING").get_json()
    assert abs(body["Timestamp"] - time.time()) < 5


def test_a_number_with_an_encoded_line_break_is_no_data_not_a_routing_404(client, db):
    answer = client.get("/messagestatus/%C2%BF%0A%C2%9D%2A")
    assert answer.status_code == 200
    assert answer.text == "Error: no data available"
