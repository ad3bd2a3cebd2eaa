'use strict';
// A small SMPP 3.4 SMSC for haven-sms's integration tests (crates/haven-sms/tests/smpp.rs),
// built on the `smpp` package's server so the gateway is tested against someone else's
// implementation of the protocol.
//
//   node smsc.js [port]        (or SMSC_PORT; 0 or nothing picks a free port)
//
// Prints `LISTENING <port>` first. Accepts bind_transceiver from system_id `haven` with
// password `secret1` (anything else: ESME_RBINDFAIL, then the connection is closed). Answers
// submit_sm with a new message_id and, when a receipt was asked for, sends a delivery receipt
// 200 ms later: stat:DELIVRD, or stat:UNDELIV (with the receipted_message_id and
// message_state TLVs) for a destination ending in 0000. A destination ending in 9999 gets
// ESME_RINVDSTADR.
//
// Control: one JSON object a line on stdin, one JSON answer a line on stdout.
//   {"cmd":"mo","from":"…","to":"…","text":"…","coding":"default|latin1|ucs2"}
//       sends a mobile-originated deliver_sm on the newest bound session; answers once the
//       deliver_sm_resp is back, with its command_status
//   {"cmd":"drop"}         destroys every client connection
//   {"cmd":"submissions"}  lists what was submitted: destination, text, message_id, …
//   {"cmd":"bound"}        how many sessions are bound
// The process exits when stdin closes.

const readline = require('readline');
const smpp = require('smpp');

const SYSTEM_ID = 'haven';
const PASSWORD = 'secret1';
const RECEIPT_DELAY_MS = 200;
const ACK_TIMEOUT_MS = 5000;

const port = Number(process.argv[2] || process.env.SMSC_PORT || 0);
const submissions = [];
const bound = [];
const connections = new Set();
let nextId = 0x5a000;

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function stamp(d) {
  const two = (n) => String(n).padStart(2, '0');
  return two(d.getUTCFullYear() % 100) + two(d.getUTCMonth() + 1) + two(d.getUTCDate()) +
    two(d.getUTCHours()) + two(d.getUTCMinutes());
}

// The decoded text of a submit_sm: short_message, or message_payload when that is empty.
function textOf(pdu) {
  const sm = pdu.short_message && pdu.short_message.message;
  if (sm) return sm;
  const payload = pdu.message_payload && pdu.message_payload.message;
  return payload || '';
}

function sendReceipt(session, submit, messageId) {
  const undelivered = submit.destination_addr.endsWith('0000');
  const submitted = stamp(new Date());
  const stat = undelivered ? 'UNDELIV' : 'DELIVRD';
  const receipt = `id:${messageId} sub:001 dlvrd:${undelivered ? '000' : '001'} ` +
    `submit date:${submitted} done date:${stamp(new Date())} stat:${stat} ` +
    `err:${undelivered ? '001' : '000'} text:`;
  const pdu = {
    source_addr_ton: submit.dest_addr_ton,
    source_addr_npi: submit.dest_addr_npi,
    source_addr: submit.destination_addr,
    dest_addr_ton: submit.source_addr_ton,
    dest_addr_npi: submit.source_addr_npi,
    destination_addr: submit.source_addr,
    esm_class: 0x04,
    data_coding: 0,
    short_message: Buffer.from(receipt, 'ascii'),
  };
  if (undelivered) {
    pdu.receipted_message_id = messageId;
    pdu.message_state = 5; // UNDELIVERABLE
  }
  // The submitting connection may be gone by now; any bound one will do, as for a real SMSC.
  const target = session.socket.writable ? session : bound[bound.length - 1];
  if (target) target.deliver_sm(pdu);
}

function encodeMo(text, coding) {
  switch (coding) {
    case 'ucs2': return { data_coding: 0x08, short_message: smpp.encodings.UCS2.encode(text) };
    case 'latin1': return { data_coding: 0x03, short_message: smpp.encodings.LATIN1.encode(text) };
    default: return { data_coding: 0x00, short_message: smpp.encodings.ASCII.encode(text) };
  }
}

const server = smpp.createServer((session) => {
  let isBound = false;
  connections.add(session);
  session.on('error', () => {}); // a client that vanished; 'close' follows
  session.on('close', () => {
    connections.delete(session);
    const i = bound.indexOf(session);
    if (i >= 0) bound.splice(i, 1);
  });

  session.on('bind_transceiver', (pdu) => {
    if (pdu.system_id !== SYSTEM_ID || pdu.password !== PASSWORD) {
      session.send(pdu.response({ command_status: smpp.ESME_RBINDFAIL }));
      session.close();
      return;
    }
    isBound = true;
    bound.push(session);
    session.send(pdu.response({ system_id: 'test-smsc' }));
  });
  for (const other of ['bind_transmitter', 'bind_receiver']) {
    session.on(other, (pdu) => session.send(pdu.response({ command_status: smpp.ESME_RBINDFAIL })));
  }

  session.on('submit_sm', (pdu) => {
    if (!isBound) {
      session.send(pdu.response({ command_status: smpp.ESME_RINVBNDSTS }));
      return;
    }
    if (pdu.destination_addr.endsWith('9999')) {
      session.send(pdu.response({ command_status: smpp.ESME_RINVDSTADR }));
      return;
    }
    const messageId = (nextId++).toString(16);
    submissions.push({
      destination: pdu.destination_addr,
      dest_addr_ton: pdu.dest_addr_ton,
      dest_addr_npi: pdu.dest_addr_npi,
      source: pdu.source_addr,
      text: textOf(pdu),
      data_coding: pdu.data_coding,
      registered_delivery: pdu.registered_delivery,
      message_id: messageId,
    });
    session.send(pdu.response({ message_id: messageId }));
    if (pdu.registered_delivery & 0x03) {
      setTimeout(() => sendReceipt(session, pdu, messageId), RECEIPT_DELAY_MS);
    }
  });

  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => {
    session.send(pdu.response());
    session.close();
  });
});

function control(line) {
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    out({ ok: false, error: 'not JSON' });
    return;
  }
  switch (req.cmd) {
    case 'mo': {
      const session = bound[bound.length - 1];
      if (!session) {
        out({ ok: false, error: 'no bound session' });
        return;
      }
      let answered = false;
      const timer = setTimeout(() => {
        answered = true;
        out({ ok: false, error: 'no deliver_sm_resp' });
      }, ACK_TIMEOUT_MS);
      session.deliver_sm({
        source_addr_ton: 1,
        source_addr_npi: 1,
        source_addr: req.from,
        dest_addr_ton: 1,
        dest_addr_npi: 1,
        destination_addr: req.to,
        esm_class: 0,
        ...encodeMo(req.text, req.coding),
      }, (resp) => {
        if (answered) return;
        clearTimeout(timer);
        out({ ok: true, status: resp.command_status });
      });
      return;
    }
    case 'drop': {
      const n = connections.size;
      for (const s of connections) s.destroy();
      out({ ok: true, dropped: n });
      return;
    }
    case 'submissions':
      out({ ok: true, submissions });
      return;
    case 'bound':
      out({ ok: true, bound: bound.length });
      return;
    default:
      out({ ok: false, error: `unknown cmd ${req.cmd}` });
  }
}

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`LISTENING ${server.address().port}\n`);
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', control);
  rl.on('close', () => process.exit(0));
});
