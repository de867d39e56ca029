//! Prefix-cache affinity without a center (pure; SPEC section 10).
//!
//! A prompt (gpumesh's rendering of it, `LlmRequest::prompt`: the chat
//! messages a line each) is cut into blocks of [`BLOCK_BYTES`]; the hash of
//! the prompt up to the end of block `k` stands for that prefix, so equal
//! hashes mean equal prefixes. Only some `k` are kept, the *checkpoints*
//! (1, 2, 3, 4, 6, 8, 12, 16, …: two an octave, and the prompt's last whole
//! block), so a prompt of `n` blocks costs about `2·log2(n)` hashes and a
//! match is found to within a third of its length.
//!
//! Each node keeps a [`Sketch`] per language model: the checkpoints of the
//! prompts its engine took, least recently used dropped first once they
//! cover more than the engine's cache holds (longer prefixes go before
//! the shorter ones they extend, as an engine evicts the ends of
//! sequences first). It publishes the most recent [`PUBLISHED`] hashes in
//! gossip; every node reads every sketch, and [`Prefixes::longest_held`]
//! says how much of a new prompt a node's engine likely has cached.

use std::collections::BTreeMap;

use gpumesh_membership::PrefixSketch;

/// Bytes of the rendered prompt per block.
pub const BLOCK_BYTES: usize = 64;
/// Hashes a node publishes per language model: 2 KB in gossip.
pub const PUBLISHED: usize = 256;

/// A prompt's prefixes: the hash of each checkpoint, shortest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefixes {
    /// (bytes of the prefix, its hash).
    checkpoints: Vec<(usize, u32)>,
    bytes: usize,
}

/// Block counts whose prefix is a checkpoint: 1 to 4, then each power of
/// two and the halfway point above it.
fn is_checkpoint(blocks: usize) -> bool {
    if blocks <= 4 {
        return blocks > 0;
    }
    let power = 1usize << (usize::BITS - 1 - blocks.leading_zeros());
    blocks == power || blocks == power + power / 2
}

impl Prefixes {
    pub fn of(prompt: &str) -> Self {
        let bytes = prompt.as_bytes();
        let whole = bytes.len() / BLOCK_BYTES;
        let mut hasher = blake3::Hasher::new();
        let mut checkpoints = Vec::new();
        for (index, block) in bytes.chunks_exact(BLOCK_BYTES).enumerate() {
            hasher.update(block);
            let blocks = index + 1;
            if is_checkpoint(blocks) || blocks == whole {
                let digest = hasher.finalize();
                let first = digest.as_bytes();
                checkpoints.push((blocks * BLOCK_BYTES, u32::from_le_bytes([first[0], first[1], first[2], first[3]])));
            }
        }
        Self { checkpoints, bytes: bytes.len() }
    }

    /// Bytes of the whole prompt.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of the longest checkpointed prefix whose hash `held` knows.
    pub fn longest_held(&self, held: impl Fn(u32) -> bool) -> usize {
        self.checkpoints.iter().rev().find(|(_, hash)| held(*hash)).map_or(0, |(bytes, _)| *bytes)
    }
}

/// The prefixes one engine holds, as its node saw it take prompts.
#[derive(Debug)]
pub struct Sketch {
    /// Hash → (last use, bytes it adds to the prefix of the checkpoint
    /// before it).
    entries: BTreeMap<u32, (u64, usize)>,
    /// Last use → hash: least recently used first.
    by_use: BTreeMap<u64, u32>,
    held_bytes: usize,
    capacity_bytes: usize,
    uses: u64,
}

impl Sketch {
    /// A sketch of an engine whose cache holds about `capacity_bytes` of
    /// rendered prompt.
    pub fn new(capacity_bytes: usize) -> Self {
        Self { entries: BTreeMap::new(), by_use: BTreeMap::new(), held_bytes: 0, capacity_bytes, uses: 0 }
    }

    /// The engine's cache now holds about `capacity_bytes` (the bytes of a
    /// token are measured as requests go); applied at the next record.
    pub fn set_capacity(&mut self, capacity_bytes: usize) {
        self.capacity_bytes = capacity_bytes;
    }

    /// The engine took a prompt with these prefixes: they are now its most
    /// recently used, the shortest most of all.
    pub fn record(&mut self, prefixes: &Prefixes) {
        let starts: Vec<usize> =
            std::iter::once(0).chain(prefixes.checkpoints.iter().map(|(bytes, _)| *bytes)).collect();
        for ((bytes, hash), start) in prefixes.checkpoints.iter().zip(&starts).rev() {
            self.uses += 1;
            match self.entries.get_mut(hash) {
                Some((used, _)) => {
                    self.by_use.remove(used);
                    *used = self.uses;
                }
                None => {
                    self.entries.insert(*hash, (self.uses, bytes - start));
                    self.held_bytes += bytes - start;
                }
            }
            self.by_use.insert(self.uses, *hash);
        }
        while self.held_bytes > self.capacity_bytes {
            let Some((_, hash)) = self.by_use.pop_first() else { break };
            if let Some((_, added)) = self.entries.remove(&hash) {
                self.held_bytes -= added;
            }
        }
    }

    /// The engine holds the prefix with this hash, by this sketch.
    pub fn holds(&self, hash: u32) -> bool {
        self.entries.contains_key(&hash)
    }

    /// What gossip carries: the [`PUBLISHED`] most recently used hashes.
    pub fn published(&self) -> PrefixSketch {
        PrefixSketch(self.by_use.values().rev().take(PUBLISHED).copied().collect())
    }
}

#[cfg(test)]
mod tests;
