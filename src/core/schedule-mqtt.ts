/**
 * The MQTT jobs of `rmq schedule` (docs/mqtt.md): `rmq mqtt ingest` on the
 * edge and `rmq mqtt forward` on the central side, each either resident (a
 * systemd service with Restart=always: messages reach the outbox within
 * mqtt.commitInterval) or timer-driven (a run every sync.interval with
 * `--until-idle`, a persistent MQTT session: between runs the local MQTT
 * broker holds the QoS 1 messages, with only its own durability). schedule.ts
 * builds the text around these; this file only decides what each mode runs.
 */
export type MqttRunMode = 'resident' | 'timer'

export interface MqttScheduleInput {
  ingest?: MqttRunMode
  forward?: MqttRunMode
  /** --until-idle of the timer runs, ms. */
  idleMs: number
}

export interface MqttServiceSpec {
  /** Unit and log name suffix: `mqtt-ingest`, `mqtt-forward`. */
  job: 'mqtt-ingest' | 'mqtt-forward'
  mode: MqttRunMode
  /** rmq arguments after the binary (without --config). */
  args: string[]
  description: string
  /** Edge ingest needs no network; forward talks to the rmq broker. */
  network: boolean
}

/** The services the MQTT flags ask for, in a stable order. */
export function mqttServices(input: MqttScheduleInput): MqttServiceSpec[] {
  const idle = `${Math.max(1, Math.round(input.idleMs / 1000))}s`
  const out: MqttServiceSpec[] = []
  if (input.ingest)
    out.push({
      job: 'mqtt-ingest',
      mode: input.ingest,
      args: ['mqtt', 'ingest', ...(input.ingest === 'timer' ? ['--until-idle', idle] : [])],
      description:
        input.ingest === 'resident'
          ? 'rmq mqtt ingest: commit local MQTT messages to the outbox, then acknowledge them'
          : 'rmq mqtt ingest --until-idle: drain the MQTT messages queued since the last run into the outbox',
      network: false,
    })
  if (input.forward)
    out.push({
      job: 'mqtt-forward',
      mode: input.forward,
      args: ['mqtt', 'forward', ...(input.forward === 'timer' ? ['--until-idle', idle] : [])],
      description:
        input.forward === 'resident'
          ? 'rmq mqtt forward: republish the broker stream to MQTT in order, commit after PUBACK'
          : 'rmq mqtt forward --until-idle: republish what arrived since the last run, then exit',
      network: true,
    })
  return out
}

/** Notes that go with the chosen modes: what each costs. */
export function mqttNotes(services: MqttServiceSpec[]): string[] {
  const notes: string[] = []
  for (const s of services) {
    if (s.job === 'mqtt-ingest' && s.mode === 'timer')
      notes.push(
        'mqtt ingest (timer): between runs the local MQTT broker holds the messages (persistent session, fixed ' +
          'mqtt.clientId): they are only as safe as its own persistence, and its queue limit (max_queued_messages) ' +
          'must hold a whole interval; see docs/mqtt.md',
      )
    if (s.mode === 'resident')
      notes.push(
        `${s.job.replace('-', ' ')} (resident): a systemd service with Restart=always; crontab cannot keep a ` +
          'process running, so no crontab line is printed for it (use @reboot or the systemd unit)',
      )
  }
  return notes
}
