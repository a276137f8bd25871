// subscriptions-transport-ws: the legacy `graphql-ws` WebSocket subprotocol.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { SubscriptionClient } from 'subscriptions-transport-ws';
import WebSocket from 'ws';
import { INSTALLATION_ID, STATION_EVENTS, STATION_ID, startServer, withStationEvents } from './server.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

test('subscriptions-transport-ws (legacy graphql-ws protocol): stationEvents after a car is plugged in', async () => {
  const client = new SubscriptionClient(
    server.wsUrl,
    { connectionParams: { Authorization: `Bearer ${server.token}` }, reconnect: false, lazy: false },
    WebSocket,
  );
  const protocols = new Promise((resolve) => client.onConnected(() => resolve(client.client?.protocol)));
  let subscription;
  try {
    const event = await withStationEvents(server.simulator, new Promise((resolve, reject) => {
      subscription = client
        .request({ query: STATION_EVENTS, variables: { installationId: INSTALLATION_ID } })
        .subscribe({
          next: (result) => (result.errors ? reject(new Error(JSON.stringify(result.errors))) : resolve(result.data.stationEvents)),
          error: (err) => reject(err instanceof Error ? err : new Error(JSON.stringify(err))),
          complete: () => reject(new Error('the subscription completed without an event')),
        });
    }));
    assert.equal(await protocols, 'graphql-ws', 'the legacy subprotocol was negotiated');
    assert.equal(event.installationId, INSTALLATION_ID);
    assert.equal(event.chargingStationId, STATION_ID);
  } finally {
    subscription?.unsubscribe();
    client.close(true);
  }
});
