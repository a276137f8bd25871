// witty-bff for the browser suite: started as the client suite starts it (tests/clients/server.mjs:
// `WITTY_BFF_BINARY`, the debug build in CI), and what the tests ask of it besides the page.
import { execFileSync } from 'node:child_process';

import { BINARY, STATION_ID } from '../clients/server.mjs';

// The client suite's: how the binary is started and stopped, and the seeded ids.
export { BINARY, INSTALLATION_ID, STATION_ID, startServer } from '../clients/server.mjs';

/** Sends a GraphQL request as alice; resolves to `data`, throws on errors. */
export async function graphql(server, query, variables = {}) {
  const res = await fetch(server.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${server.token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await res.json();
  if (body.errors?.length) throw new Error(`GraphQL errors: ${JSON.stringify(body.errors)}`);
  return body.data;
}

/** A simulator control route (`plug`, `unplug`) on alice's station; 409 (already so) is fine. */
export async function simulate(server, action) {
  const res = await fetch(`${server.simulator}/_sim/stations/${STATION_ID}/${action}`, { method: 'POST' });
  if (!res.ok && res.status !== 409) throw new Error(`simulator ${action}: ${res.status} ${await res.text()}`);
  return res.status;
}

/** A dev token for another seeded user (`ivan`, the installer on 33), signed as the server's. */
export function tokenFor(sub) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('WITTY_BFF_')));
  return execFileSync(BINARY, ['token', '--sub', sub], { env, encoding: 'utf8' }).trim().split('\n').pop();
}
