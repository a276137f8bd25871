// graphql-sse's client (distinct connections mode, as witty-bff serves it): a subscription.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createClient } from 'graphql-sse';
import { INSTALLATION_ID, STATION_EVENTS, STATION_ID, startServer, withStationEvents } from './server.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

test('graphql-sse subscription: stationEvents after a car is plugged in', async () => {
  const client = createClient({
    url: server.url,
    headers: { Authorization: `Bearer ${server.token}` },
    retryAttempts: 0,
  });
  let dispose;
  try {
    const event = await withStationEvents(server.simulator, new Promise((resolve, reject) => {
      dispose = client.subscribe(
        { query: STATION_EVENTS, variables: { installationId: INSTALLATION_ID } },
        {
          next: (result) => (result.errors ? reject(new Error(JSON.stringify(result.errors))) : resolve(result.data.stationEvents)),
          error: (err) => reject(err instanceof Error ? err : new Error(JSON.stringify(err))),
          complete: () => reject(new Error('the subscription completed without an event')),
        },
      );
    }));
    assert.equal(event.installationId, INSTALLATION_ID);
    assert.equal(event.chargingStationId, STATION_ID);
  } finally {
    dispose?.();
    client.dispose();
  }
});
