//! RFC 9162 §2.1 Merkle trees over SHA-256.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The hash of a leaf: SHA-256(0x00 || entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// The hash of an interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly less than `n` (n >= 2).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// MTH(D[n]): the root of the tree over these leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// PATH(m, D[n]): the inclusion proof of leaf `index` (RFC 9162 §2.1.3.1).
pub fn inclusion_proof(index: usize, leaves: &[Hash]) -> Vec<Hash> {
    assert!(index < leaves.len(), "index within the tree");
    let mut proof = Vec::new();
    path(index, leaves, &mut proof);
    proof
}

fn path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
    if d.len() <= 1 {
        return;
    }
    let k = split(d.len());
    if m < k {
        path(m, &d[..k], out);
        out.push(root(&d[k..]));
    } else {
        path(m - k, &d[k..], out);
        out.push(root(&d[..k]));
    }
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

/// PROOF(m, D[n]): the consistency proof between the first `m` leaves and all of them
/// (RFC 9162 §2.1.4.1).
pub fn consistency_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    assert!(m >= 1 && m <= leaves.len(), "0 < m <= n");
    let mut out = Vec::new();
    subproof(m, leaves, true, &mut out);
    out
}

fn subproof(m: usize, d: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = d.len();
    if m == n {
        if !complete {
            out.push(root(d));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &d[..k], complete, out);
        out.push(root(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(root(&d[..k]));
    }
}

/// Verifies a consistency proof between tree heads of sizes `m <= n` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(m: u64, n: u64, proof: &[Hash], first: &Hash, second: &Hash) -> bool {
    if m == 0 || m > n {
        return false;
    }
    if m == n {
        return proof.is_empty() && first == second;
    }
    let mut proof: Vec<Hash> = proof.to_vec();
    if m.is_power_of_two() {
        proof.insert(0, *first);
    }
    let Some((first_hash, rest)) = proof.split_first() else { return false };
    let (mut f_n, mut s_n) = (m - 1, n - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (*first_hash, *first_hash);
    for c in rest {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && fr == *first && sr == *second
}

/// The roots of the perfect subtrees that make up a tree, left to right (its "compact range").
/// Appending a leaf touches O(log n) of them; the tree head follows from them alone, so the
/// server never rereads old entries to compute it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// One subtree root per set bit of `size`, largest (leftmost) first.
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a frontier from its stored form; `None` if it does not fit the size.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Option<Self> {
        (size.count_ones() as usize == nodes.len()).then_some(Self { size, nodes })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, largest first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.push_subtree(leaf, 0);
    }

    /// Appends a perfect subtree of `2^height` leaves, given its root. The tree's size must be
    /// a multiple of `2^height`, as it is in the tree being rebuilt (panics otherwise).
    fn push_subtree(&mut self, root: Hash, height: u32) {
        assert!(self.size.trailing_zeros() >= height, "a subtree on its own boundary");
        let mut carry = root;
        let mut size = self.size >> height;
        // Merge equal-sized subtrees, like binary addition of one.
        while size & 1 == 1 {
            let left = self.nodes.pop().expect("one node per set bit");
            carry = node_hash(&left, &carry);
            size >>= 1;
        }
        self.nodes.push(carry);
        self.size += 1 << height;
    }

    /// Appends the leaves of `other`, a tree built apart over the leaves that follow these.
    /// This tree's size must be a multiple of the largest power of two in `other`'s size, so
    /// that `other`'s subtrees are subtrees of the whole (panics otherwise): a tree over a
    /// large log can then be built in aligned pieces, one per core.
    pub fn append(&mut self, other: &Frontier) {
        let mut bits = other.size;
        for node in &other.nodes {
            let height = u64::BITS - 1 - bits.leading_zeros();
            self.push_subtree(*node, height);
            bits &= !(1 << height);
        }
    }

    /// The tree head (MTH of all leaves so far).
    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(last) = iter.next() else { return empty_root() };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash {
        data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap().try_into().unwrap()
    }

    /// The Certificate Transparency reference inputs (RFC 6962/9162 test data of
    /// transparency-dev/merkle and certificate-transparency-go).
    fn leaves() -> Vec<Hash> {
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
            .iter()
            .map(|x| leaf_hash(&data_encoding::HEXLOWER.decode(x.as_bytes()).unwrap()))
            .collect()
    }

    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn appending_aligned_pieces_gives_the_same_tree() {
        let l: Vec<Hash> = (0u32..300).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for (split, n) in [(0, 0), (0, 5), (64, 64), (64, 65), (64, 128), (128, 300), (256, 300), (4, 7)] {
            let mut whole = Frontier::new();
            l[..n].iter().for_each(|x| whole.push(*x));
            let (mut first, mut rest) = (Frontier::new(), Frontier::new());
            l[..split].iter().for_each(|x| first.push(*x));
            l[split..n].iter().for_each(|x| rest.push(*x));
            first.append(&rest);
            assert_eq!(first, whole, "{split} + {}", n - split);
            assert_eq!(first.root(), root(&l[..n]));
        }
    }

    #[test]
    #[should_panic(expected = "a subtree on its own boundary")]
    fn appending_a_piece_that_is_not_aligned_is_refused() {
        let mut first = Frontier::new();
        first.push(leaf_hash(b"a"));
        let mut rest = Frontier::new();
        rest.push(leaf_hash(b"b"));
        rest.push(leaf_hash(b"c"));
        first.append(&rest);
    }

    #[test]
    fn reference_roots_for_every_size() {
        let l = leaves();
        let mut f = Frontier::new();
        assert_eq!(f.root(), h(ROOTS[0]));
        for n in 1..=8 {
            assert_eq!(root(&l[..n]), h(ROOTS[n]), "MTH size {n}");
            f.push(l[n - 1]);
            assert_eq!(f.root(), h(ROOTS[n]), "frontier size {n}");
        }
    }

    #[test]
    fn reference_inclusion_proofs() {
        let l = leaves();
        let cases: [(usize, usize, &[&str]); 4] = [
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (i, n, want) in cases {
            let proof = inclusion_proof(i, &l[..n]);
            let want: Vec<Hash> = want.iter().map(|x| h(x)).collect();
            assert_eq!(proof, want, "leaf {i} of {n}");
            assert!(verify_inclusion(i as u64, n as u64, &l[i], &proof, &h(ROOTS[n])));
            assert!(!verify_inclusion(i as u64, n as u64, &l[(i + 1) % n], &proof, &h(ROOTS[n])));
        }
    }

    #[test]
    fn reference_consistency_proofs() {
        let l = leaves();
        let cases: [(usize, usize, &[&str]); 4] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (m, n, want) in cases {
            let proof = consistency_proof(m, &l[..n]);
            let want: Vec<Hash> = want.iter().map(|x| h(x)).collect();
            assert_eq!(proof, want, "{m} -> {n}");
            assert!(verify_consistency(m as u64, n as u64, &proof, &h(ROOTS[m]), &h(ROOTS[n])));
            if m != n {
                assert!(!verify_consistency(m as u64, n as u64, &proof, &h(ROOTS[n]), &h(ROOTS[n])));
            }
        }
    }

    #[test]
    fn every_proof_in_every_small_tree() {
        let l: Vec<Hash> = (0..40u8).map(|i| leaf_hash(&[i, i.wrapping_mul(7)])).collect();
        for n in 1..=l.len() {
            let r = root(&l[..n]);
            for i in 0..n {
                assert!(verify_inclusion(i as u64, n as u64, &l[i], &inclusion_proof(i, &l[..n]), &r));
            }
            for m in 1..=n {
                let p = consistency_proof(m, &l[..n]);
                assert!(verify_consistency(m as u64, n as u64, &p, &root(&l[..m]), &r), "{m}->{n}");
            }
        }
    }
}
