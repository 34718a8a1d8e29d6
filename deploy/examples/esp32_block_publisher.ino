// A sensor node publishing binary sample blocks (docs/payloads.md) from an ESP32 (Arduino core).
//
// Samples a 3-axis accelerometer at 1 kHz (readAccel() is a stand-in: replace it with your
// driver, e.g. an MPU-6050 over I2C) and publishes 100 int16 samples per message, with their
// start time, period and scale, on sensors/esp32-1/accel. The daemon reads the blocks under
// its default --payload json (by their magic) or --payload binary.
// Libraries: PubSubClient (Nick O'Leary). Set WIFI_*, BROKER and the clock (NTP) below.

#include <WiFi.h>
#include <PubSubClient.h>
#include <time.h>
#include <sys/time.h>

const char *WIFI_SSID = "ssid", *WIFI_PASSWORD = "password", *BROKER = "192.168.1.10";
const char *TOPIC = "sensors/esp32-1/accel";
const int RATE_HZ = 1000, BLOCK = 100, CHANNELS = 3;
const float SCALE = 9.80665f / 16384.0f;  // m/s^2 per LSB at +-2 g

// Header 16 + start 8 + period 8 + scales 4*C + samples 2*N*C; ESP32 and x86 are
// little-endian, so memcpy of native values gives the wire format.
const int HEADER = 16, BLOCK_BYTES = HEADER + 16 + 4 * CHANNELS + 2 * BLOCK * CHANNELS;
uint8_t msg[BLOCK_BYTES];
int16_t *samples = (int16_t *)(msg + HEADER + 16 + 4 * CHANNELS);
int filled = 0;
double blockStart = 0;

WiFiClient net;
PubSubClient mqtt(net);

double now() {
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  return tv.tv_sec + tv.tv_usec / 1e6;
}

void readAccel(int16_t *xyz) {  // stand-in signal
  static uint32_t k = 0;
  float t = k++ / (float)RATE_HZ;
  xyz[0] = (int16_t)(2000 * sinf(2 * PI * 30 * t));
  xyz[1] = (int16_t)(800 * cosf(2 * PI * 7 * t));
  xyz[2] = 16384;
}

void writeHeader() {
  const uint8_t magic[4] = {0x89, 'S', 'G', 'B'};
  uint16_t channels = CHANNELS, reserved = 0;
  uint32_t n = BLOCK;
  double period = 1.0 / RATE_HZ;
  memcpy(msg, magic, 4);
  msg[4] = 1;  // version
  msg[5] = 2;  // dtype int16 + scale
  msg[6] = 3;  // flags: start time and period
  msg[7] = 0;
  memcpy(msg + 8, &channels, 2);
  memcpy(msg + 10, &reserved, 2);
  memcpy(msg + 12, &n, 4);
  memcpy(msg + HEADER + 8, &period, 8);
  for (int c = 0; c < CHANNELS; c++) memcpy(msg + HEADER + 16 + 4 * c, &SCALE, 4);
}

void setup() {
  WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
  while (WiFi.status() != WL_CONNECTED) delay(200);
  configTime(0, 0, "pool.ntp.org");  // block times are wall-clock seconds
  mqtt.setServer(BROKER, 1883);
  mqtt.setBufferSize(BLOCK_BYTES + 64);  // PubSubClient's default buffer is 256 bytes
  writeHeader();
}

void loop() {
  static uint32_t next = micros();
  if (!mqtt.connected()) {
    mqtt.connect("esp32-1");
    return;
  }
  mqtt.loop();
  if ((int32_t)(micros() - next) < 0) return;
  next += 1000000 / RATE_HZ;
  if (filled == 0) blockStart = now();
  readAccel(samples + CHANNELS * filled);
  if (++filled == BLOCK) {
    memcpy(msg + HEADER, &blockStart, 8);
    mqtt.publish(TOPIC, msg, BLOCK_BYTES);
    filled = 0;
  }
}
