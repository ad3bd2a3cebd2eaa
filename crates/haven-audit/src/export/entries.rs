//! The entry lines of an export, checked on every core.
//!
//! The file is read in large buffers of whole lines. Each buffer is split across the cores
//! (parsing and hashing are independent per entry) while the next one is read, and results are
//! taken in line order: the error reported is always the first bad line's, whatever the
//! buffer size, with the reason a line-by-line reading gives for that line. (The verifier
//! before this one checked entries a batch behind its reading, so a malformed line could be
//! reported ahead of an altered entry before it.) Buffers are reused: the half gigabyte of a
//! million entries passes through a few buffers instead of a million fresh strings, whose pages
//! the kernel would have to zero (that zeroing was a fifth of the verifier's time).

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::sync::Arc;
use std::thread::JoinHandle;

use data_encoding::HEXLOWER;

use super::{EntryHead, VerifyError, err};
use crate::merkle::{Frontier, Hash, leaf_hash};

/// Bytes read and checked together: about 33,000 entries of a typical export.
pub(super) const BATCH_BYTES: usize = 16 << 20;

/// What one good entry line gave.
struct Line {
    /// The sequence number the line gives.
    found: u64,
    /// For a full entry: the sequence number and time its JSON gives.
    head: Option<(u64, i64)>,
    leaf: Hash,
}

/// A bad line: the numbers it gave before the problem (the reader checks those first, as a
/// line-by-line reading would) and the problem.
struct Bad {
    found: Option<u64>,
    head_seq: Option<u64>,
    reason: &'static str,
}

fn bad(found: Option<u64>, reason: &'static str) -> Bad {
    Bad { found, head_seq: None, reason }
}

/// Why a worker stopped before the end of its part.
enum Stop {
    /// The line after the good ones is bad.
    Bad(Bad),
    /// The checkpoints start at this byte offset of the part.
    Checkpoints(usize),
}

/// A part of a buffer, checked: its good lines up to the first stop, and the stop.
struct Part {
    lines: Vec<Line>,
    stop: Option<Stop>,
}

/// Checks one line of the entry section: `Ok(None)` for the first checkpoint line.
fn check_line(raw: &[u8]) -> Result<Option<Line>, Bad> {
    let line =
        std::str::from_utf8(raw).map_err(|_| bad(None, "unreadable: stream did not contain valid UTF-8"))?;
    let (kind, rest) = line.split_once(' ').ok_or_else(|| bad(None, "malformed line"))?;
    match kind {
        "c" => return Ok(None),
        "e" | "h" => {}
        _ => return Err(bad(None, "unexpected line (entries must come before checkpoints)")),
    }
    let (found, payload) = rest.split_once(' ').ok_or_else(|| bad(None, "malformed entry line"))?;
    let found: u64 = found.parse().map_err(|_| bad(None, "malformed sequence number"))?;
    let seen = Some(found);
    if kind == "h" {
        let leaf = HEXLOWER
            .decode(payload.as_bytes())
            .ok()
            .and_then(|v| Hash::try_from(v).ok())
            .ok_or_else(|| bad(seen, "malformed leaf hash"))?;
        return Ok(Some(Line { found, head: None, leaf }));
    }
    let (recorded, payload) = payload.split_once(' ').ok_or_else(|| bad(seen, "malformed entry line"))?;
    let head: EntryHead =
        serde_json::from_str(payload).map_err(|_| bad(seen, "the entry is not valid canonical JSON"))?;
    let leaf = leaf_hash(payload.as_bytes());
    let mut hex = [0u8; 64];
    HEXLOWER.encode_mut(&leaf, &mut hex);
    if hex[..] != *recorded.as_bytes() {
        return Err(Bad {
            found: seen,
            head_seq: Some(head.seq),
            reason: "the entry does not match the hash recorded when it was logged: it was altered",
        });
    }
    Ok(Some(Line { found, head: Some((head.seq, head.time)), leaf }))
}

/// Checks the whole lines in `bytes` until the first bad or checkpoint line, into `lines`
/// (emptied first; a vector handed back and forth keeps its memory).
fn check_part(bytes: &[u8], mut lines: Vec<Line>) -> Part {
    lines.clear();
    let mut offset = 0;
    while offset < bytes.len() {
        let end = memchr::memchr(b'\n', &bytes[offset..]).map_or(bytes.len(), |i| offset + i);
        let raw = &bytes[offset..end];
        // As `BufRead::lines`: a carriage return is part of the line end only before a newline.
        let raw = if end < bytes.len() { raw.strip_suffix(b"\r").unwrap_or(raw) } else { raw };
        match check_line(raw) {
            Ok(Some(line)) => lines.push(line),
            Ok(None) => return Part { lines, stop: Some(Stop::Checkpoints(offset)) },
            Err(b) => return Part { lines, stop: Some(Stop::Bad(b)) },
        }
        offset = end + 1;
    }
    Part { lines, stop: None }
}

/// A buffer being checked: each part's start in it and its worker.
struct Batch {
    buf: Arc<Vec<u8>>,
    parts: Vec<(usize, JoinHandle<Part>)>,
}

impl Batch {
    /// Waits for the workers and gives the buffer back.
    fn into_buffer(self) -> Vec<u8> {
        for (_, h) in self.parts {
            // A worker that panicked has nothing to give back but the buffer.
            let _ = h.join();
        }
        Arc::try_unwrap(self.buf).unwrap_or_else(|shared| shared.as_ref().clone())
    }
}

/// What taking a batch's results left.
enum Taken {
    /// Every line was a good entry: the buffer, to read into again.
    Buffer(Vec<u8>),
    /// The checkpoints start in this batch: its bytes from the first checkpoint line on.
    Checkpoints(Vec<u8>),
}

/// Leaf hashes kept in blocks that never move: a vector grown by doubling would copy the
/// 32 MB of a million leaves and fault in twice that.
pub(super) struct Leaves {
    /// Every block full but the last.
    blocks: Vec<Vec<Hash>>,
    /// Leaves per block: a power of two.
    block_len: usize,
}

impl Default for Leaves {
    fn default() -> Self {
        // 2 MiB, one huge page.
        Self::with_blocks_of(1 << 16)
    }
}

impl Leaves {
    /// No leaves yet, to be kept in blocks of `block_len` (a power of two).
    fn with_blocks_of(block_len: usize) -> Self {
        assert!(block_len.is_power_of_two(), "blocks of a power of two");
        Self { blocks: Vec::new(), block_len }
    }

    fn push(&mut self, leaf: Hash) {
        match self.blocks.last_mut() {
            Some(block) if block.len() < self.block_len => block.push(leaf),
            _ => {
                let mut block = Vec::with_capacity(self.block_len);
                block.push(leaf);
                self.blocks.push(block);
            }
        }
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.blocks.last().map_or(0, |last| (self.blocks.len() - 1) * self.block_len + last.len())
    }

    /// The tree head at each of the `sizes` (sorted; those above the number of leaves are
    /// left out), and over all the leaves. Each block's tree is built on a core, and the heads
    /// are put together from the blocks' trees: a block starts at a multiple of its own
    /// power-of-two length, so its subtrees are subtrees of the whole.
    pub fn heads(&self, sizes: &[u64]) -> (BTreeMap<u64, Hash>, Hash) {
        debug_assert!(sizes.is_sorted(), "sizes in order");
        let per = self.blocks.len().div_ceil(parallelism()).max(1);
        let built: Vec<Block> = std::thread::scope(|s| {
            let workers: Vec<_> = self
                .blocks
                .chunks(per)
                .enumerate()
                .map(|(c, blocks)| {
                    let block_len = self.block_len;
                    s.spawn(move || {
                        let first = c * per;
                        let start = |i: usize| ((first + i) * block_len) as u64;
                        blocks.iter().enumerate().map(|(i, b)| build(start(i), b, sizes)).collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().expect("a verifier thread panicked")).collect()
        });
        let mut heads = BTreeMap::new();
        let mut whole = Frontier::new();
        if sizes.first() == Some(&0) {
            heads.insert(0, whole.root());
        }
        for Block { tree, prefixes } in built {
            for (size, prefix) in prefixes {
                let mut head = whole.clone();
                head.append(&prefix);
                heads.insert(size, head.root());
            }
            whole.append(&tree);
        }
        (heads, whole.root())
    }
}

/// A block's tree, and the trees of its first leaves at each wanted size that ends in it.
struct Block {
    tree: Frontier,
    prefixes: Vec<(u64, Frontier)>,
}

/// Builds the tree of the block of `leaves` that starts at leaf number `start`.
fn build(start: u64, leaves: &[Hash], sizes: &[u64]) -> Block {
    let mut wanted = sizes[sizes.partition_point(|&m| m <= start)..].iter().copied().peekable();
    let mut tree = Frontier::new();
    let mut prefixes = Vec::new();
    for leaf in leaves {
        tree.push(*leaf);
        while let Some(size) = wanted.next_if_eq(&(start + tree.size())) {
            prefixes.push((size, tree.clone()));
        }
    }
    Block { tree, prefixes }
}

/// Threads to check with: one per core, within reason.
fn parallelism() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8)
}

/// The entries checked so far.
pub(super) struct Entries {
    /// The leaf hashes, in order.
    pub leaves: Leaves,
    /// Entries present in full.
    pub full: u64,
    /// The number of the last line taken (the header's lines included).
    pub line: usize,
    last_time: i64,
    workers: usize,
    /// Result vectors handed back by the workers, to hand out again.
    spare_lines: Vec<Vec<Line>>,
}

impl Entries {
    /// Splits `buf` at line ends into one part per core and starts checking them.
    fn launch(&mut self, buf: Vec<u8>) -> Batch {
        let buf = Arc::new(buf);
        let mut parts = Vec::with_capacity(self.workers);
        let mut start = 0;
        for i in 1..=self.workers {
            let end = if i == self.workers {
                buf.len()
            } else {
                let at = (buf.len() * i / self.workers).max(start);
                memchr::memchr(b'\n', &buf[at..]).map_or(buf.len(), |j| at + j + 1)
            };
            if end > start {
                let shared = Arc::clone(&buf);
                let lines = self.spare_lines.pop().unwrap_or_default();
                parts.push((start, std::thread::spawn(move || check_part(&shared[start..end], lines))));
            }
            start = end;
        }
        Batch { buf, parts }
    }

    /// Takes a batch's results in line order.
    fn take(&mut self, batch: Batch) -> Result<Taken, VerifyError> {
        let Batch { buf, parts } = batch;
        let mut parts = parts.into_iter();
        while let Some((start, handle)) = parts.next() {
            let part = handle.join().expect("a verifier thread panicked");
            for line in &part.lines {
                self.accept(line)?;
            }
            self.spare_lines.push(part.lines);
            match part.stop {
                None => {}
                Some(Stop::Bad(b)) => return Err(self.refuse(b)),
                Some(Stop::Checkpoints(offset)) => {
                    let tail = buf[start + offset..].to_vec();
                    Batch { buf, parts: parts.collect() }.into_buffer();
                    return Ok(Taken::Checkpoints(tail));
                }
            }
        }
        Ok(Taken::Buffer(Batch { buf, parts: Vec::new() }.into_buffer()))
    }

    /// Takes one good line.
    fn accept(&mut self, line: &Line) -> Result<(), VerifyError> {
        let n = self.line + 1;
        let seq = self.leaves.len() as u64 + 1;
        if line.found != seq {
            return Err(gap(n, line.found, seq));
        }
        if let Some((head_seq, time)) = line.head {
            if head_seq != seq {
                return Err(says(n, head_seq, seq));
            }
            if time < self.last_time {
                return Err(err(n, Some(seq), "time goes backwards"));
            }
            self.last_time = time;
            self.full += 1;
        }
        self.leaves.push(line.leaf);
        self.line = n;
        Ok(())
    }

    /// The error for a bad line, the checks made in a line-by-line reading's order.
    fn refuse(&self, b: Bad) -> VerifyError {
        let n = self.line + 1;
        let seq = self.leaves.len() as u64 + 1;
        match b {
            Bad { found: Some(found), .. } if found != seq => gap(n, found, seq),
            Bad { head_seq: Some(head_seq), .. } if head_seq != seq => says(n, head_seq, seq),
            Bad { found, reason, .. } => err(n, found.map(|_| seq), reason),
        }
    }
}

fn gap(n: usize, found: u64, seq: u64) -> VerifyError {
    err(n, Some(seq), format!("sequence gap or reordering: found {found}, expected {seq}"))
}

fn says(n: usize, head_seq: u64, seq: u64) -> VerifyError {
    err(n, Some(seq), format!("the entry says it is number {head_seq}"))
}

/// What reading into a buffer gave.
enum Filled {
    /// Whole lines, and more to come.
    Lines,
    /// Everything up to the end of the input; or up to a read error, whose partial line is
    /// dropped (the error is that line's, as in a line-by-line reading).
    End(Option<std::io::Error>),
    /// No line ends in the buffer yet: a line is longer than it.
    LongLine,
}

/// Reads into `buf` up to `target` bytes.
fn fill(input: &mut impl BufRead, buf: &mut Vec<u8>, target: usize) -> Filled {
    if buf.len() < target {
        let want = (target - buf.len()) as u64;
        // A reader with its own `read_buf` (a file) reads into the spare capacity without
        // zeroing it first.
        match input.by_ref().take(want).read_to_end(buf) {
            Ok(got) if (got as u64) < want => return Filled::End(None),
            Ok(_) => {}
            Err(e) => {
                buf.truncate(memchr::memrchr(b'\n', buf).map_or(0, |i| i + 1));
                return Filled::End(Some(e));
            }
        }
    }
    if memchr::memrchr(b'\n', buf).is_some() { Filled::Lines } else { Filled::LongLine }
}

/// What the entry reader leaves for the checkpoint reader: the bytes it read from the first
/// checkpoint line on, and the read error that ended the input, if one did.
pub(super) type Rest = (Vec<u8>, Option<std::io::Error>);

/// Reads and checks the entry lines that follow the header's `header_lines` lines, which took
/// `header_bytes` bytes. Returns the entries and what is left for the checkpoint reader (which
/// then goes on reading `input`). `progress` is called with the bytes read so far after every
/// buffer.
pub(super) fn read(
    input: &mut impl BufRead,
    header_lines: usize,
    header_bytes: u64,
    batch_bytes: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<(Entries, Rest), VerifyError> {
    let batch_bytes = batch_bytes.max(1);
    let mut entries = Entries {
        leaves: Leaves::default(),
        full: 0,
        line: header_lines,
        last_time: i64::MIN,
        workers: parallelism(),
        spare_lines: Vec::new(),
    };
    let mut read_bytes = header_bytes;
    let mut carry = Vec::new();
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut in_flight: Option<Batch> = None;
    loop {
        let mut buf = spare.pop().unwrap_or_else(|| Vec::with_capacity(batch_bytes));
        // A buffer that grew around a long line goes back to its size.
        buf.clear();
        buf.shrink_to(batch_bytes);
        buf.append(&mut carry);
        let held = buf.len();
        let mut target = batch_bytes;
        let filled = loop {
            match fill(input, &mut buf, target) {
                Filled::LongLine => {
                    // The buffer in flight is taken before reading on, so that a bad line in it
                    // is reported without first reading a hostile file's endless line.
                    if let Some(previous) = in_flight.take() {
                        match entries.take(previous)? {
                            Taken::Buffer(b) => spare.push(b),
                            Taken::Checkpoints(mut tail) => {
                                tail.append(&mut buf);
                                return Ok((entries, (tail, None)));
                            }
                        }
                    }
                    target = target.saturating_mul(2);
                }
                filled => break filled,
            }
        };
        if let Filled::Lines = filled
            && let Some(i) = memchr::memrchr(b'\n', &buf)
        {
            carry.extend_from_slice(&buf[i + 1..]);
            buf.truncate(i + 1);
        }
        read_bytes += (buf.len() + carry.len()).saturating_sub(held) as u64;
        progress(read_bytes);
        let error = match filled {
            Filled::End(error) => Some(error),
            _ => None,
        };
        let launched = (!buf.is_empty()).then(|| entries.launch(buf));
        // The buffer just read is being checked while the one before it is taken.
        if let Some(previous) = std::mem::replace(&mut in_flight, launched) {
            match entries.take(previous)? {
                Taken::Buffer(b) => spare.push(b),
                Taken::Checkpoints(mut tail) => {
                    if let Some(next) = in_flight.take() {
                        tail.extend_from_slice(&next.into_buffer());
                    }
                    tail.append(&mut carry);
                    return Ok((entries, (tail, error.flatten())));
                }
            }
        }
        if let Some(error) = error {
            let tail = match in_flight.take() {
                Some(last) => match entries.take(last)? {
                    Taken::Buffer(_) => Vec::new(),
                    Taken::Checkpoints(tail) => tail,
                },
                None => Vec::new(),
            };
            return Ok((entries, (tail, error)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{leaf_hash, root};
    use proptest::prelude::*;

    proptest! {
        /// The heads put together from blocks are the heads of the whole tree, whatever the
        /// block length and wherever the sizes fall.
        #[test]
        fn heads_from_blocks_are_the_tree_heads(
            n in 0usize..300,
            bits in 0u32..6,
            mut sizes in proptest::collection::vec(0u64..320, 0..8),
        ) {
            let all: Vec<Hash> = (0..n as u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            let mut leaves = Leaves::with_blocks_of(1 << bits);
            all.iter().for_each(|l| leaves.push(*l));
            sizes.sort_unstable();
            sizes.dedup();
            let (heads, whole) = leaves.heads(&sizes);
            prop_assert_eq!(whole, root(&all));
            let expected: BTreeMap<u64, Hash> =
                sizes.iter().filter(|&&m| m <= n as u64).map(|&m| (m, root(&all[..m as usize]))).collect();
            prop_assert_eq!(heads, expected);
        }
    }
}
