"""A sensor node publishing binary sample blocks (docs/payloads.md), MicroPython or CPython.

On an ESP32 with MicroPython (umqtt.simple ships with it): copy this file, set WIFI_* and
BROKER, and run it; it samples a 3-axis accelerometer (a stand-in function here: replace
``read_accel`` with your driver) at RATE_HZ and publishes one block of BLOCK samples, int16
raw readings with their scale, on ``sensors/<device>/accel``. On a PC (paho-mqtt) it sends
synthetic data, which is how the tests run it::

    python deploy/examples/block_publisher.py --broker localhost --port 1883 --blocks 5
"""

import math
import struct
import sys
import time

MAGIC = b"\x89SGB"
RATE_HZ = 1000
BLOCK = 100  # samples per message: 10 messages a second at 1 kHz
SCALE = 9.80665 / 16384  # m/s^2 per LSB of a +-2 g 16-bit accelerometer (MPU-6050)
DEVICE = "esp32-1"
BROKER = "192.168.1.10"
WIFI_SSID, WIFI_PASSWORD = "ssid", "password"


def block(raw, channels, start, period, scale):
    """int16 samples (a flat list, row-major) -> one version-1 block with times and scales."""
    n = len(raw) // channels
    head = struct.pack("<4sBBBBHHI", MAGIC, 1, 2, 3, 0, channels, 0, n)
    times = struct.pack("<dd", start, period)
    scales = struct.pack(f"<{channels}f", *([scale] * channels))
    return head + times + scales + struct.pack(f"<{len(raw)}h", *raw)


def read_accel(k):
    """Stand-in for an accelerometer driver: raw int16 x, y, z of sample ``k``."""
    t = k / RATE_HZ
    return (int(2000 * math.sin(2 * math.pi * 30 * t)), int(800 * math.cos(2 * math.pi * 7 * t)),
            16384)


def connect(host, port):
    try:
        from umqtt.simple import MQTTClient  # MicroPython

        client = MQTTClient(DEVICE, host, port=port)
        client.connect()
        return client.publish, client.disconnect
    except ImportError:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.connect(host, port)
        client.loop_start()

        def publish(topic, payload):
            client.publish(topic, payload, qos=1).wait_for_publish(5)

        def close():
            client.disconnect()
            client.loop_stop()

        return publish, close


def main(host=BROKER, port=1883, blocks=None):
    publish, close = connect(host, port)
    topic = f"sensors/{DEVICE}/accel"
    period = 1.0 / RATE_HZ
    k, sent = 0, 0
    t0 = time.time()  # sample k was taken at t0 + k * period (the sample clock, not arrival)
    try:
        while blocks is None or sent < blocks:
            start = t0 + k * period
            raw = []
            for _ in range(BLOCK):
                raw.extend(read_accel(k))
                k += 1
                if blocks is None:
                    time.sleep(period)  # on a node: a timer interrupt or the sensor's FIFO
            publish(topic, block(raw, 3, start, period, SCALE))
            sent += 1
    finally:
        close()


if __name__ == "__main__":
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))  # noqa: B905 (MicroPython has no strict=)
    main(args.get("--broker", BROKER), int(args.get("--port", 1883)),
         int(args["--blocks"]) if "--blocks" in args else None)
