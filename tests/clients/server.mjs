// Starts the release witty-bff on a free loopback port with its embedded simulator, reads what it
// prints at start (its GraphQL URL, the simulator's URL and a dev token for alice) and stops it.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

/** The release build `.ci/run` makes; `WITTY_BFF_BINARY` may name another. */
export const BINARY =
  process.env.WITTY_BFF_BINARY ?? fileURLToPath(new URL('../../target/release/witty-bff', import.meta.url));

/** The station the simulator seeds in installation 33 (alice's). */
export const INSTALLATION_ID = '33';
export const STATION_ID = '60e0d33e-cd45-4382-9e4d-c64002c3f5a7';

export async function startServer() {
  if (!existsSync(BINARY)) {
    throw new Error(`${BINARY} is missing: run \`cargo build --release --bin witty-bff\` first`);
  }
  // Only the settings below: none of the caller's WITTY_BFF_* (an upstream URL, say) leaks in.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('WITTY_BFF_')));
  Object.assign(env, {
    WITTY_BFF_LISTEN: '127.0.0.1:0',
    WITTY_BFF_RATE_LIMIT_PER_SECOND: '0',
    WITTY_BFF_CORS_ORIGINS: '*',
    WITTY_BFF_WS_KEEPALIVE_SECS: '5',
    RUST_LOG: process.env.RUST_LOG ?? 'warn',
  });
  const child = spawn(BINARY, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
  const started = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error('witty-bff printed no dev token within 30 s')), 30_000);
    const fail = (err) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`${err.message}\nstdout:\n${stdout}\nstderr:\n${stderr.slice(-4000)}`));
    };
    child.once('error', fail);
    child.once('exit', (code, signal) => fail(new Error(`witty-bff exited at start (${signal ?? code})`)));
    child.stdout.setEncoding('utf8').on('data', (d) => {
      stdout += d;
      const url = stdout.match(/serving GraphQL on (http:\/\/\S+\/graphql)/)?.[1];
      const simulator = stdout.match(/embedded Witty-Home simulator at (http:\/\/\S+)/)?.[1];
      const token = stdout.match(/Authorization: Bearer (\S+)/)?.[1];
      if (url && simulator && token) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        child.removeAllListeners('error');
        resolve({ url, simulator: simulator.replace(/\/$/, ''), token });
      }
    });
  });
  child.stdout.resume();
  return {
    ...started,
    wsUrl: started.url.replace(/^http/, 'ws'),
    base: started.url.replace(/\/graphql$/, ''),
    logs: () => stderr,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** A station event through the simulator: plugs a car in, or unplugs it when one is plugged. */
export async function causeStationEvent(simulator) {
  for (const action of ['plug', 'unplug']) {
    const res = await fetch(`${simulator}/_sim/stations/${STATION_ID}/${action}`, { method: 'POST' });
    if (res.ok) return action;
    if (res.status !== 409) throw new Error(`simulator ${action}: ${res.status} ${await res.text()}`);
  }
  throw new Error('the simulator refused both plug and unplug');
}

/**
 * Waits for `received()` to resolve, causing a station event every 1.5 s meanwhile: the first may
 * come before witty-bff has subscribed upstream.
 */
export async function withStationEvents(simulator, received, timeoutMs = 30_000) {
  let done = false;
  const result = received.finally(() => { done = true; });
  const poke = (async () => {
    const deadline = Date.now() + timeoutMs;
    while (!done) {
      if (Date.now() > deadline) throw new Error(`no station event within ${timeoutMs / 1000} s`);
      await causeStationEvent(simulator);
      await Promise.race([sleep(1_500), result.catch(() => {})]);
    }
  })();
  await Promise.race([result, poke]);
  return result;
}

export const STATION_EVENTS = /* GraphQL */ `
  subscription StationEvents($installationId: ID!) {
    stationEvents(installationId: $installationId) { id type rawType installationId chargingStationId }
  }
`;
