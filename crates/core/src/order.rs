//! Putting large vectors in order without a second copy of them.

/// Moves `items` into `order` (`order[k]`: the index of the item that goes to `k`), by
/// following each cycle of the permutation.
pub(crate) fn put_in_order<T>(items: &mut [T], mut order: Vec<usize>) {
    for start in 0..items.len() {
        let mut at = start;
        loop {
            let from = order[at];
            order[at] = at;
            if from == start {
                break;
            }
            items.swap(at, from);
            at = from;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_put_in_the_order_given() {
        let mut items = vec!['a', 'b', 'c', 'd', 'e'];
        put_in_order(&mut items, vec![2, 0, 1, 4, 3]);
        assert_eq!(items, vec!['c', 'a', 'b', 'e', 'd']);
        let mut items = vec![1, 2, 3];
        put_in_order(&mut items, vec![0, 1, 2]);
        assert_eq!(items, vec![1, 2, 3]);
    }
}
