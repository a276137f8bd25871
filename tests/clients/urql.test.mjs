// urql (@urql/core): a query over fetchExchange, and a subscription through subscriptionExchange
// over graphql-ws.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client, fetchExchange, gql, subscriptionExchange } from '@urql/core';
import { createClient as createWsClient } from 'graphql-ws';
import WebSocket from 'ws';
import { INSTALLATION_ID, STATION_EVENTS, STATION_ID, startServer, withStationEvents } from './server.mjs';

let server;
let ws;
let urql;

before(async () => {
  server = await startServer();
  ws = createWsClient({
    url: server.wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: `Bearer ${server.token}` },
    retryAttempts: 0,
  });
  urql = new Client({
    url: server.url,
    fetchOptions: () => ({ headers: { authorization: `Bearer ${server.token}` } }),
    exchanges: [
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          const input = { ...request, query: request.query || '' };
          return { subscribe: (sink) => ({ unsubscribe: ws.subscribe(input, sink) }) };
        },
      }),
    ],
  });
});

after(async () => {
  await ws?.dispose();
  await server?.stop();
});

test('urql query: installations and their stations', async () => {
  const result = await urql
    .query(gql`{ installations { id chargingStations { id friendlyName } } }`, {}, { requestPolicy: 'network-only' })
    .toPromise();
  assert.ifError(result.error);
  const installation = result.data.installations.find((i) => i.id === INSTALLATION_ID);
  assert.ok(installation?.chargingStations.some((s) => s.id === STATION_ID), JSON.stringify(result.data));
});

test('urql subscription over graphql-ws: stationEvents after a car is plugged in', async () => {
  let subscription;
  try {
    const event = await withStationEvents(server.simulator, new Promise((resolve, reject) => {
      subscription = urql
        .subscription(gql(STATION_EVENTS), { installationId: INSTALLATION_ID })
        .subscribe((result) => (result.error ? reject(result.error) : resolve(result.data.stationEvents)));
    }));
    assert.equal(event.installationId, INSTALLATION_ID);
    assert.equal(event.chargingStationId, STATION_ID);
  } finally {
    subscription?.unsubscribe();
  }
});
