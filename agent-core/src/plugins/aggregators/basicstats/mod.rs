pub fn register(_r: &mut crate::registry::Registry) {}
