//! Compile-time checks that a `#[repr(C)]` type has exactly the layout written down for it.
//!
//! The kernel programs (built for `bpfel-unknown-none`) and the agent compile the same
//! definitions, and both run these checks, so a field moved, resized, swapped with another or
//! left out of the list stops the build on either side instead of shifting bytes silently.

/// Size of the field a projection points at: measures a field in a const context, where no
/// value of `T` exists. The projection is never called.
pub(crate) const fn field_size<T, F>(_projection: fn(&T) -> &F) -> usize {
    core::mem::size_of::<F>()
}

/// Asserts that `$ty` is `$size` bytes and that each listed field sits at its offset; that the
/// list names every field (the destructuring fails to compile otherwise); and that the
/// fields' sizes add up to the whole, so there is no implicit padding: every byte the kernel
/// writes is one the agent reads, and none is left uninitialised.
macro_rules! assert_layout {
    ($ty:ident, size $size:literal, { $($field:ident: $offset:literal),+ $(,)? }) => {
        const _: () = {
            assert!(core::mem::size_of::<$ty>() == $size);
            $(assert!(core::mem::offset_of!($ty, $field) == $offset);)+
            assert!(0 $(+ $crate::layout::field_size(|v: &$ty| &v.$field))+ == $size);
        };
        const _: fn(&$ty) = |value| {
            let $ty { $($field: _),+ } = value;
        };
    };
}
pub(crate) use assert_layout;
