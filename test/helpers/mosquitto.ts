/** Real Mosquitto brokers for the tests: the launcher shipped in rmq/testing (src/testing/mosquitto.ts). */
export * from '../../src/testing/mosquitto.js'
