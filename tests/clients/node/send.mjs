// Sends one call of each type with Segment's Node library (batching on), then prints what it saw.
// Usage: WRITE_KEY=... HOST=http://127.0.0.1:PORT node send.mjs
import { Analytics } from '@segment/analytics-node'

const analytics = new Analytics({
  writeKey: process.env.WRITE_KEY,
  host: process.env.HOST,
  flushAt: 6, // the six calls go as one /v1/batch
  flushInterval: 60000,
  maxRetries: 1,
})
const errors = []
const statuses = []
analytics.on('error', (err) => errors.push(String(err.reason)))
analytics.on('http_response', (res) => statuses.push(res.status))

const userId = 'node-user'
analytics.identify({ userId, traits: { email: 'node@example.com', plan: 'pro' } })
analytics.track({ userId, event: 'Report Created', properties: { rows: 3 } })
analytics.group({ userId, groupId: 'node-group', traits: { name: 'Node Co' } })
analytics.page({ userId, name: 'Home' })
analytics.screen({ userId, name: 'Dashboard' })
analytics.alias({ userId, previousId: 'node-anon' })
await analytics.closeAndFlush({ timeout: 20000 })
console.log(JSON.stringify({ errors, statuses }))
