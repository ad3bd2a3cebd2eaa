// A stand-in for Twilio's Messages API (a phone carrier cannot be reached from tests), speaking
// its wire format: `POST /2010-04-01/Accounts/{sid}/Messages.json` with HTTP Basic auth and a
// form body, answered with a Message resource; `GET` lists them (Haven looks a text up there
// after a crash). It keeps what was "sent" for the test to read.

import http from 'node:http';

export const ACCOUNT_SID = 'AC' + '0123456789abcdef'.repeat(2);
export const AUTH_TOKEN = 'test-auth-token-0123456789';

export async function startTwilio() {
  const messages = [];
  const expected = 'Basic ' + Buffer.from(`${ACCOUNT_SID}:${AUTH_TOKEN}`).toString('base64');
  const resource = (m) => ({
    sid: m.sid, account_sid: ACCOUNT_SID, to: m.to, from: m.from, body: m.body, status: 'queued',
    direction: 'outbound-api', num_segments: '1', date_created: m.created.toUTCString(),
    uri: `/2010-04-01/Accounts/${ACCOUNT_SID}/Messages/${m.sid}.json`,
  });
  const send = (res, status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname !== `/2010-04-01/Accounts/${ACCOUNT_SID}/Messages.json`) return send(res, 404, { code: 20404, message: 'Not found' });
    if (req.headers.authorization !== expected) return send(res, 401, { code: 20003, message: 'Authenticate' });
    if (req.method === 'GET') {
      const to = url.searchParams.get('To');
      return send(res, 200, { messages: messages.filter((m) => !to || m.to === to).reverse().map(resource), page: 0, page_size: 50, next_page_uri: null });
    }
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      const form = new URLSearchParams(raw);
      if (!form.get('To') || !form.get('From') || !form.get('Body')) return send(res, 400, { code: 21602, message: 'Message body is required.' });
      const m = { sid: 'SM' + String(messages.length + 1).padStart(32, '0'), to: form.get('To'), from: form.get('From'), body: form.get('Body'), created: new Date() };
      messages.push(m);
      send(res, 201, resource(m));
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    messages,
    close: () => new Promise((r) => server.close(r)),
  };
}
