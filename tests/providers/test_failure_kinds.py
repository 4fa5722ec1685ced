"""Each plugin's code tables classify a failure as temporary or permanent, at send and later,
read from its fake's documented wire format."""

from messaging.providers.base import PERMANENT, TEMPORARY, Receipt, Recipient
from tests.providers.conftest import plugin
from tests.providers.fakes import Reply

ONE = [Recipient("27830000001", "11")]


def refused(fake, sleeps, name, reply: Reply, **values):
    fake.default = lambda request: reply
    [result] = plugin(name, fake, sleeps, **values).send_batch(ONE, "hi", None)
    assert not result.accepted
    return result.failure_kind


def polled(fake, sleeps, name, reply: Reply):
    fake.default = lambda request: reply
    [update] = plugin(name, fake, sleeps).query_status(["p1"])
    assert update.status == "failed"
    return update.failure_kind


def test_twilio(fake, sleeps):
    invalid = Reply(400, {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400})
    unreachable = {"sid": "p1", "status": "undelivered", "error_code": 30003}
    assert refused(fake, sleeps, "Twilio", invalid) == PERMANENT
    assert polled(fake, sleeps, "Twilio", Reply(200, unreachable)) == TEMPORARY


def test_vonage_reads_send_statuses_and_receipt_codes_apart(fake, sleeps):
    barred = {"message-count": "1", "messages": [{"status": "7", "error-text": "Barred"}]}
    vonage = plugin("Vonage", fake, sleeps, options={"apiKey": "k", "callbackSecret": "s"})
    busy = {"messageId": "p1", "status": "failed", "err-code": "7", "msisdn": "27830000001"}

    [update] = vonage.parse_receipt(
        Receipt("POST", "https://us/cb?secret=s", {}, {"secret": "s"}, json=busy)
    )

    assert refused(fake, sleeps, "Vonage", Reply(200, barred)) == PERMANENT
    assert (update.status, update.failure_kind) == ("failed", TEMPORARY)


def test_clickatell(fake, sleeps):
    error = {"code": "105", "description": "Invalid destination address"}
    reply = {"data": {"message": [{"accepted": False, "to": "27830000001", "error": error}]}}
    expired = {"data": {"apiMessageId": "p1", "messageStatus": "010"}}
    assert refused(fake, sleeps, "Clickatell", Reply(202, reply)) == PERMANENT
    assert polled(fake, sleeps, "Clickatell", Reply(200, expired)) == TEMPORARY


def test_clickatell_one(fake, sleeps):
    opted_out = {"code": "26", "description": "Recipient opted out"}
    message = {"apiMessageId": None, "accepted": False, "to": "27830000001", "error": opted_out}
    expired = {"sms": {"status": "EXPIRED", "statusCode": 20}}
    assert refused(fake, sleeps, "ClickatellOne", Reply(400, {"messages": [message]})) == PERMANENT
    assert polled(fake, sleeps, "ClickatellOne", Reply(200, expired)) == TEMPORARY


def test_bulksms(fake, sleeps):
    def message(subtype):
        status = {"id": f"FAILED.{subtype}", "type": "FAILED", "subtype": subtype}
        return {"id": "p1", "to": "+27830000001", "userSuppliedId": "11", "status": status}

    assert refused(fake, sleeps, "BulkSMS", Reply(201, [message("BLOCKED")])) == PERMANENT
    assert polled(fake, sleeps, "BulkSMS", Reply(200, message("EXPIRED"))) == TEMPORARY


def test_africastalking(fake, sleeps):
    entry = {"statusCode": 403, "number": "+27830000001", "status": "InvalidPhoneNumber"}
    answer = {"SMSMessageData": {"Message": "Sent to 0/1", "Recipients": [entry]}}
    at = plugin("AfricasTalking", fake, sleeps, options={"username": "u", "callbackSecret": "s"})

    def report(reason):
        form = {"secret": "s", "id": "p1", "status": "Failed", "failureReason": reason}
        [update] = at.parse_receipt(Receipt("POST", "https://us/cb", {}, form))
        return update.failure_kind

    assert refused(fake, sleeps, "AfricasTalking", Reply(201, answer)) == PERMANENT
    assert report("UserInBlackList") == PERMANENT
    assert report("DeliveryFailure") == TEMPORARY
