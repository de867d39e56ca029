use super::*;

/// A prompt of `blocks` whole blocks: `shared` blocks of a common system
/// prompt, then blocks of its own (`tag`).
fn prompt(shared: usize, blocks: usize, tag: &str) -> String {
    let common = "s".repeat(BLOCK_BYTES * shared);
    let own: String =
        (shared..blocks).map(|index| format!("{tag}{index:0>width$}", width = BLOCK_BYTES - tag.len())).collect();
    common + &own
}

#[test]
fn checkpoints_are_two_an_octave_and_the_last_block() {
    let marks: Vec<usize> = (1..=40).filter(|blocks| is_checkpoint(*blocks)).collect();
    assert_eq!(marks, [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]);
    let prefixes = Prefixes::of(&prompt(0, 37, "a"));
    let covered: Vec<usize> = prefixes.checkpoints.iter().map(|(bytes, _)| bytes / BLOCK_BYTES).collect();
    assert_eq!(covered, [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 37]);
    assert_eq!(Prefixes::of("short").checkpoints, [], "no whole block, no checkpoint");
}

#[test]
fn a_shared_prefix_is_found_to_its_checkpoint_and_nothing_else_is() {
    let mut sketch = Sketch::new(1 << 20);
    sketch.record(&Prefixes::of(&prompt(20, 30, "a")));
    let sibling = Prefixes::of(&prompt(20, 40, "b"));
    // The 20 shared blocks are known up to the checkpoint at 16.
    assert_eq!(sibling.longest_held(|hash| sketch.holds(hash)), 16 * BLOCK_BYTES);
    let stranger = Prefixes::of(&prompt(0, 40, "c"));
    assert_eq!(stranger.longest_held(|hash| sketch.holds(hash)), 0);
    let same = Prefixes::of(&prompt(20, 30, "a"));
    assert_eq!(same.longest_held(|hash| sketch.holds(hash)), 30 * BLOCK_BYTES, "the whole prompt again");
    // What gossip carries answers the same.
    let published = sketch.published();
    assert_eq!(sibling.longest_held(|hash| published.contains(hash)), 16 * BLOCK_BYTES);
}

#[test]
fn the_least_recently_used_prefixes_go_first_and_ends_before_beginnings() {
    // Room for 24 blocks: two prompts of 24 blocks sharing 8.
    let mut sketch = Sketch::new(24 * BLOCK_BYTES);
    let first = Prefixes::of(&prompt(8, 24, "a"));
    let second = Prefixes::of(&prompt(8, 24, "b"));
    sketch.record(&first);
    sketch.record(&second);
    assert!(sketch.held_bytes <= 24 * BLOCK_BYTES);
    // The second is whole, the first lost its end but keeps the shared part.
    assert_eq!(second.longest_held(|hash| sketch.holds(hash)), 24 * BLOCK_BYTES);
    assert_eq!(first.longest_held(|hash| sketch.holds(hash)), 8 * BLOCK_BYTES);
    // Using the first again makes it the one kept.
    sketch.record(&first);
    assert_eq!(first.longest_held(|hash| sketch.holds(hash)), 24 * BLOCK_BYTES);
    assert_eq!(second.longest_held(|hash| sketch.holds(hash)), 8 * BLOCK_BYTES);
}

#[test]
fn gossip_carries_the_most_recent_hashes_only() {
    let mut sketch = Sketch::new(usize::MAX);
    for index in 0..PUBLISHED {
        sketch.record(&Prefixes::of(&prompt(0, 1, &format!("p{index}-"))));
    }
    let last = Prefixes::of(&prompt(0, 1, "last-"));
    sketch.record(&last);
    let published = sketch.published();
    assert_eq!(published.0.len(), PUBLISHED);
    assert_eq!(last.longest_held(|hash| published.contains(hash)), BLOCK_BYTES, "the newest is published");
    let oldest = Prefixes::of(&prompt(0, 1, "p0-"));
    assert_eq!(oldest.longest_held(|hash| published.contains(hash)), 0, "the oldest fell out of gossip");
    assert_eq!(oldest.longest_held(|hash| sketch.holds(hash)), BLOCK_BYTES, "but not out of the sketch");
}
